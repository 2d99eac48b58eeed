"""Mamba-2 selective state-space scan, chunked (state-space duality), in plain PyTorch.

The recurrence, per head h (head dim P, state size N, heads share B/C within a group):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        (P, N)
    y_t = h_t C_t + D * x_t                                  (P,)

:func:`ssd_scan` evaluates it chunk by chunk (Dao & Gu 2024, "Transformers are SSMs"): inside a
chunk of L steps as a masked (L x L) product, across chunks by passing the (P, N) state. Memory
is O(T + L^2) per head, never (T x T). :func:`ssd_step` is the one-token recurrence for decoding.
This is the reference twin of mamba-ssm's ``mamba_chunk_scan_combined`` / ``selective_state_update``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_viper.ops.conv import run_ids


def discretize_dt(
    dt: Tensor, dt_bias: Tensor | None, softplus: bool, limit: tuple[float, float] = (0.0, math.inf)
) -> Tensor:
    """(..., H) raw time steps -> float32 steps: + bias, softplus, clamp to ``limit``."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if softplus:
        dt = F.softplus(dt)
    if limit != (0.0, math.inf):
        dt = dt.clamp(min=limit[0], max=limit[1])
    return dt


def segment_sums(a: Tensor) -> Tensor:
    """(..., L) -> (..., L, L) with [i, j] = sum_{k=j+1..i} a_k for j <= i and -inf above.

    Built from a masked cumulative sum rather than differences of a running sum, which keeps
    exp() of it accurate when the running sum is large.
    """
    n = a.shape[-1]
    lower = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()  # [i, j]: j <= i
    strict = lower.tril(-1)  # [k, j]: k > j
    sums = a.unsqueeze(-1).expand(*a.shape, n).masked_fill(~strict, 0.0).cumsum(-2)  # [i, j]
    return sums.masked_fill(~lower, -math.inf)


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    initial_state: Tensor | None = None,
    seq_idx: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Chunked Mamba-2 scan.

    Args:
        x: (Bt, T, H, P) inputs.
        dt: (Bt, T, H) time steps before ``dt_bias`` / softplus / ``dt_limit``.
        A: (H,) decay rates (negative).
        B, C: (Bt, T, G, N) input / output projections, G groups dividing H.
        chunk_size: steps per chunk L.
        D: (H,) skip weights or None.
        initial_state: (Bt, H, P, N) state before position 0 (continues position 0's run), or None.
        seq_idx: (Bt, T) run labels or None: the state restarts from zero where the label changes.

    Returns:
        y (Bt, T, H, P) in x's dtype and the final state (Bt, H, P, N) float32.
    """
    bt, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"ssd_scan: heads ({h}) must be a multiple of groups ({g})")
    r = h // g
    dt = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # (Bt, T, H)
    a = A.float()
    state = x.new_zeros(bt, h, p, n, dtype=torch.float32) if initial_state is None else initial_state.float()
    run = run_ids(seq_idx) if seq_idx is not None else None
    prev_run = run[:, 0] if run is not None else None  # run of the state carried into a chunk
    outs: list[Tensor] = []
    for start in range(0, t, chunk_size):
        sl = slice(start, min(start + chunk_size, t))
        xc = x[:, sl].float()  # (Bt, L, H, P)
        length = xc.shape[1]
        dtc = dt[:, sl]  # (Bt, L, H)
        bc, cc = B[:, sl].float(), C[:, sl].float()  # (Bt, L, G, N)
        da = dtc * a  # (Bt, L, H)
        seg = segment_sums(da.transpose(1, 2))  # (Bt, H, L, L)
        keep_prev = torch.ones(bt, length, dtype=torch.float32, device=x.device)
        if run is not None and prev_run is not None:
            rc = run[:, sl]  # (Bt, L)
            same = rc[:, :, None] == rc[:, None, :]  # (Bt, L, L)
            seg = seg.masked_fill(~same[:, None], -math.inf)
            keep_prev = (rc == prev_run[:, None]).float()
            prev_run = rc[:, -1]
        decay = torch.exp(seg).view(bt, g, r, length, length)  # (Bt, G, R, L, L)
        xdt = (xc * dtc.unsqueeze(-1)).view(bt, length, g, r, p)  # (Bt, L, G, R, P)
        # inside the chunk: y_l = sum_{s<=l} (C_l . B_s) exp(sum_{s<k<=l} dA_k) dt_s x_s
        cb = torch.einsum("blgn,bsgn->bgls", cc, bc)  # (Bt, G, L, L)
        y = torch.einsum("bgrls,bsgrp->blgrp", cb.unsqueeze(2) * decay, xdt)  # (Bt, L, G, R, P)
        # from the carried state: y_l += exp(sum_{k<=l} dA_k) C_l h_prev
        into = torch.exp(da.cumsum(1)) * keep_prev.unsqueeze(-1)  # (Bt, L, H)
        st = state.view(bt, g, r, p, n)
        y = y + torch.einsum("blgn,bgrpn->blgrp", cc, st) * into.view(bt, length, g, r, 1)
        # state at the chunk end
        to_end = decay[..., -1, :]  # (Bt, G, R, L): exp(sum_{s<k<=last} dA_k), 0 across runs
        fresh = torch.einsum("bsgn,bsgrp->bgrpn", bc, xdt * to_end.permute(0, 3, 1, 2).unsqueeze(-1))
        state = (st * into[:, -1].view(bt, g, r, 1, 1) + fresh).view(bt, h, p, n)
        y = y.reshape(bt, length, h, p)
        if D is not None:
            y = y + xc * D.float().view(1, 1, h, 1)
        outs.append(y)
    return torch.cat(outs, 1).to(x.dtype), state


def ssd_step(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    """One recurrence step; ``state`` (Bt, H, P, N) float32 is updated in place.

    x (Bt, H, P), dt (Bt, H), B/C (Bt, G, N) -> y (Bt, H, P) in x's dtype. Like mamba-ssm's
    ``selective_state_update`` there is no ``dt_limit`` clamp here.
    """
    h = x.shape[1]
    g = B.shape[1]
    r = h // g
    dt = discretize_dt(dt, dt_bias, dt_softplus)  # (Bt, H)
    decay = torch.exp(dt * A.float())  # (Bt, H)
    bh = B.float().repeat_interleave(r, dim=1)  # (Bt, H, N)
    ch = C.float().repeat_interleave(r, dim=1)  # (Bt, H, N)
    xf = x.float()
    new = state.float() * decay[..., None, None] + (dt[..., None] * xf)[..., None] * bh[:, :, None, :]
    state.copy_(new)
    y = (new * ch[:, :, None, :]).sum(-1)  # (Bt, H, P)
    if D is not None:
        y = y + xf * D.float()[:, None]
    return y.to(x.dtype)
