"""The SSD quadratic form and matrix against the chunked scan and a naive loop of the equation."""

from __future__ import annotations

import math

import torch

from lightning_viper.analysis.edges import Edges
from lightning_viper.analysis.ssd_form import ssd_matrix, ssd_quadratic
from lightning_viper.backbones.mamba2 import Mamba2Mixer, SSDInputs
from lightning_viper.ops.ssd import ssd_scan

from .conftest import ROWS, hidden_for, hybrid, make_state


def mamba(backbone_chunk: int = 8) -> Mamba2Mixer:
    mixer = hybrid(backbone_chunk).layers[0].mixer
    assert isinstance(mixer, Mamba2Mixer)
    return mixer


def naive_matrix(inp: SSDInputs, segment: torch.Tensor, edges: Edges | None = None) -> torch.Tensor:
    """M[b, h, i, j] = sum_n C[i, n] B[j, n] * exp(sum_{k=j+1..i} Δ_k A_h) * Δ_j, one entry at a time.
    With ``edges``: 0 from a source j into a receiver i, whose decay skips the source steps k."""
    bsz, t, h, _ = inp.x.shape
    r = h // inp.B.shape[2]
    m = torch.zeros(bsz, h, t, t, dtype=torch.float64)
    for b in range(bsz):
        for head in range(h):
            g = head // r
            a = float(inp.A[head])
            for i in range(t):
                receiver = edges is not None and bool(edges.receivers[b, i])
                for j in range(i + 1):
                    if segment[b, i] != segment[b, j]:  # segments are contiguous runs
                        continue
                    if receiver and bool(edges.sources[b, j]):
                        continue
                    steps = [k for k in range(j + 1, i + 1) if not (receiver and bool(edges.sources[b, k]))]
                    decay = math.exp(sum(float(inp.dt[b, k, head]) * a for k in steps))
                    cb = float((inp.C[b, i, g].double() * inp.B[b, j, g].double()).sum())
                    m[b, head, i, j] = cb * decay * float(inp.dt[b, j, head])
    return m


def inputs(chunk: int = 8) -> tuple[Mamba2Mixer, SSDInputs, torch.Tensor, torch.Tensor]:
    mixer = mamba(chunk)
    state = make_state(ROWS)
    x = hidden_for(state)
    with torch.no_grad():
        inp = mixer.ssd_inputs(x, state.mask, state.segment)
    return mixer, inp, state.segment, x


def test_matrix_equals_the_naive_equation() -> None:
    _, inp, segment, _ = inputs()
    ref = naive_matrix(inp, segment)
    got = ssd_matrix(inp, segment).double()
    assert ref.abs().max() > 1e-3  # not a matrix of zeros
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    rows = slice(7, 19)  # a block of query rows is the same block of the whole matrix
    torch.testing.assert_close(ssd_matrix(inp, segment, rows).double(), ref[:, :, rows], rtol=1e-5, atol=1e-6)


def test_quadratic_form_equals_the_scan() -> None:
    _, inp, segment, _ = inputs(chunk=8)  # sequences of 27 tokens: four scan chunks
    y_scan, _ = ssd_scan(inp.x, inp.dt, inp.A, inp.B, inp.C, chunk_size=8, D=inp.D, seq_idx=segment)
    y_quad = ssd_quadratic(inp, segment)
    assert y_scan.abs().max() > 1e-3
    torch.testing.assert_close(y_quad, y_scan, rtol=1e-5, atol=1e-5)


def test_removed_edges_follow_the_naive_equation() -> None:
    _, inp, segment, _ = inputs()
    shape = inp.x.shape[:2]
    edges = Edges(torch.rand(shape) < 0.4, torch.rand(shape) < 0.5)  # any sources, any receivers
    ref_m = naive_matrix(inp, segment, edges)
    torch.testing.assert_close(ssd_matrix(inp, segment, edges=edges).double(), ref_m, rtol=1e-5, atol=1e-6)
    ref = torch.einsum("bhij,bjhp->bihp", ref_m, inp.x.double()) + inp.x.double() * inp.D.double().view(1, 1, -1, 1)
    torch.testing.assert_close(ssd_quadratic(inp, segment, edges).double(), ref, rtol=1e-5, atol=1e-5)
    assert (ref_m - naive_matrix(inp, segment)).abs().max() > 1e-3  # the edges changed something


def test_query_chunks_give_the_same_result(monkeypatch) -> None:
    _, inp, segment, _ = inputs()
    whole = ssd_quadratic(inp, segment)
    monkeypatch.setattr("lightning_viper.analysis.ssd_form.MATRIX_ELEMENTS", 1)  # one query row per block
    torch.testing.assert_close(ssd_quadratic(inp, segment), whole, rtol=1e-6, atol=1e-6)


def test_mixer_output_through_the_quadratic_form_equals_forward() -> None:
    mixer, inp, segment, x = inputs()
    state = make_state(ROWS)
    with torch.no_grad():
        ref = mixer(x, state.mask, state.segment)
        got = mixer.ssd_output(ssd_quadratic(inp, segment), inp.z)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
