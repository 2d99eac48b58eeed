"""The Mamba-2 SSD as an explicit (T x T) mixing matrix per head: its implicit attention.

For a Mamba-2 layer whose scan inputs are x_j (P,), Δ_j, A (per head) and B_j, C_i (N,) (per
group), the output is, exactly,

    y_i = sum_{j <= i, same run} M[i, j] x_j + D x_i,
    M[i, j] = (C_i . B_j) exp(cumA_i - cumA_j) Δ_j,     cumA_t = sum_{k <= t} Δ_k A,

(Dao & Gu 2024, state-space duality). :func:`ssd_matrix` materialises rows of M (time step Δ_j
included: without it M is not the matrix the layer applies); :func:`ssd_quadratic` evaluates the
sum in chunks of query rows, so memory stays (B, H, chunk, T). The running sums are float64, so
cumA_i - cumA_j keeps its precision on long sequences.

With ``edges`` (sources -> receivers removed), a receiver row i sees the sequence as if the
source tokens were absent, as a masked softmax row does: M[i, j] = 0 for every source j, and
the source tokens' steps do not decay what i reads from earlier tokens (the sum in exp() runs
over non-source k only). Zeroing the entries alone would leave a path: how much the text before
the video has decayed by the time an instruction token reads it depends on the video's Δ.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_viper.analysis.edges import Edges
from lightning_viper.backbones.mamba2 import SSDInputs
from lightning_viper.ops.conv import run_ids

MATRIX_ELEMENTS = 2**24  # entries of one (B, H, chunk, T) block: sets the query chunk


def query_chunk(batch: int, heads: int, length: int) -> int:
    """Query rows per block so that one (B, H, rows, T) float64 block stays near MATRIX_ELEMENTS."""
    return max(1, min(length, MATRIX_ELEMENTS // max(1, batch * heads * length)))


def ssd_matrix(inp: SSDInputs, segment: Tensor, rows: slice | None = None, edges: Edges | None = None) -> Tensor:
    """Rows ``rows`` (default: all) of the mixing matrix: (B, H, Lq, T) float32, 0 above the
    diagonal and across runs of ``segment`` (B, T) (packed samples, padding); ``edges`` removed."""
    t, h = inp.x.shape[1], inp.x.shape[2]
    g = inp.B.shape[2]
    start, stop, _ = (rows if rows is not None else slice(0, t)).indices(t)
    rows = slice(start, stop)
    da = inp.dt.double() * inp.A.double()  # (B, T, H)
    cum = da.cumsum(1).transpose(1, 2)  # (B, H, T)
    logdecay = cum[:, :, rows, None] - cum[:, :, None, :]  # (B, H, Lq, T) float64
    run = run_ids(segment)  # (B, T)
    qpos = torch.arange(start, stop, device=segment.device)
    kpos = torch.arange(t, device=segment.device)
    allowed = (kpos[None, None, :] <= qpos[None, :, None]) & (run[:, rows, None] == run[:, None, :])  # (B, Lq, T)
    if edges is not None:
        kept = da.masked_fill(edges.sources.unsqueeze(-1), 0.0).cumsum(1).transpose(1, 2)  # (B, H, T)
        seen_without = kept[:, :, rows, None] - kept[:, :, None, :]  # decay over non-source steps only
        logdecay = torch.where(edges.receivers[:, None, rows, None], seen_without, logdecay)
        allowed = allowed & ~edges.blocked()[:, rows]
    decay = torch.exp(logdecay.masked_fill(~allowed[:, None], -math.inf)).float()
    cb = torch.einsum("bign,bjgn->bgij", inp.C[:, rows].float(), inp.B.float())  # (B, G, Lq, T)
    cb = cb.repeat_interleave(h // g, dim=1)  # (B, H, Lq, T): head h reads group h // (H / G)
    return cb * decay * inp.dt.transpose(1, 2)[:, :, None, :]  # Δ_j on the key side


def ssd_quadratic(inp: SSDInputs, segment: Tensor, edges: Edges | None = None) -> Tensor:
    """y (B, T, H, P) in x's dtype: sum_j M[i, j] x_j + D x_i, with ``edges`` removed
    (None = nothing removed: equals the scan)."""
    bsz, t, h, _ = inp.x.shape
    xf = inp.x.float()
    step = query_chunk(bsz, h, t)
    out = []
    for s in range(0, t, step):
        m = ssd_matrix(inp, segment, slice(s, min(s + step, t)), edges)  # (B, H, c, T)
        out.append(torch.einsum("bhij,bjhp->bihp", m, xf))  # (B, c, H, P)
    y = torch.cat(out, 1) + xf * inp.D.float().view(1, 1, h, 1)
    return y.to(inp.x.dtype)
