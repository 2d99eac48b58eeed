"""The chunked SSD scan against the Mamba-2 recurrence written step by step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_viper.ops.ssd import ssd_scan, ssd_step


def naive_recurrence(x, dt, A, B, C, D, state, seq_idx):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T ; y_t = h_t C_t + D x_t, one step at a time.

    x (b,t,h,p), dt (b,t,h) already discretised, B/C (b,t,g,n); the state restarts at zero where
    seq_idx changes. Returns y and the final state.
    """
    b, t, h, _ = x.shape
    g = B.shape[2]
    h_state = state.clone()
    ys = []
    for i in range(t):
        if i > 0 and seq_idx is not None:
            restart = (seq_idx[:, i] != seq_idx[:, i - 1]).float().view(b, 1, 1, 1)
            h_state = h_state * (1 - restart)
        bh = B[:, i].repeat_interleave(h // g, dim=1)  # (b,h,n)
        ch = C[:, i].repeat_interleave(h // g, dim=1)
        decay = torch.exp(dt[:, i] * A).view(b, h, 1, 1)
        h_state = decay * h_state + (dt[:, i].view(b, h, 1, 1) * x[:, i].unsqueeze(-1)) * bh.unsqueeze(2)
        y = (h_state * ch.unsqueeze(2)).sum(-1) + D.view(1, h, 1) * x[:, i]
        ys.append(y)
    return torch.stack(ys, 1), h_state


def make_inputs(b, t, h, p, g, n, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=gen, dtype=torch.float64)
    dt_raw = torch.randn(b, t, h, generator=gen, dtype=torch.float64)
    A = -torch.rand(h, generator=gen, dtype=torch.float64) * 4 - 0.1
    B = torch.randn(b, t, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, t, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    dt_bias = torch.randn(h, generator=gen, dtype=torch.float64) * 0.5
    state0 = torch.randn(b, h, p, n, generator=gen, dtype=torch.float64)
    return x, dt_raw, A, B, C, D, dt_bias, state0


@pytest.mark.parametrize(
    ("b", "t", "h", "p", "g", "n", "chunk"),
    [
        (1, 1, 2, 3, 1, 4, 4),
        (2, 13, 4, 3, 2, 5, 4),
        (2, 33, 6, 2, 3, 4, 8),
        (1, 17, 4, 4, 4, 3, 17),
        (3, 7, 2, 2, 1, 2, 64),
    ],
)
@pytest.mark.parametrize("packed", [False, True])
def test_ssd_scan_matches_recurrence(b, t, h, p, g, n, chunk, packed):
    x, dt_raw, A, B, C, D, dt_bias, state0 = make_inputs(b, t, h, p, g, n, seed=t * 7 + h)
    seq_idx = None
    if packed:  # boundaries at odd places, incl. one inside the first chunk, and -1 padding on the left
        seq_idx = torch.zeros(b, t, dtype=torch.long)
        for row in range(b):
            cuts = sorted({(row + 3) % max(t, 1), (2 * t) // 3})
            for c in cuts:
                seq_idx[row, c:] += 1
            seq_idx[row, : min(row, t)] = -1
    dt = F.softplus(dt_raw + dt_bias)
    y_ref, h_ref = naive_recurrence(x, dt, A, B, C, D, state0, seq_idx)
    y, h_fin = ssd_scan(
        x, dt_raw, A, B, C, chunk, D=D, dt_bias=dt_bias, dt_softplus=True, initial_state=state0, seq_idx=seq_idx
    )
    # the scan computes in float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h_fin.double(), h_ref, rtol=1e-4, atol=1e-4)


def test_ssd_scan_split_equals_whole():
    """Scanning [0, k) then [k, T) from the carried state equals one scan (chunked prefill)."""
    x, dt_raw, A, B, C, D, dt_bias, _ = make_inputs(2, 29, 4, 3, 2, 5, seed=3)
    x, B, C = x.float(), B.float(), C.float()
    kw = dict(D=D.float(), dt_bias=dt_bias.float(), dt_softplus=True)
    y, h = ssd_scan(x, dt_raw.float(), A.float(), B, C, 8, **kw)
    k = 11
    y1, h1 = ssd_scan(x[:, :k], dt_raw[:, :k].float(), A.float(), B[:, :k], C[:, :k], 8, **kw)
    y2, h2 = ssd_scan(x[:, k:], dt_raw[:, k:].float(), A.float(), B[:, k:], C[:, k:], 8, initial_state=h1, **kw)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h2, h, rtol=1e-5, atol=1e-5)


def test_ssd_scan_dt_limit_clamps():
    x, dt_raw, A, B, C, D, dt_bias, _ = make_inputs(1, 9, 2, 2, 1, 3, seed=5)
    lo = 0.7
    dt = F.softplus(dt_raw + dt_bias).clamp(min=lo)
    y_ref, _ = naive_recurrence(x, dt, A, B, C, D, torch.zeros(1, 2, 2, 3, dtype=torch.float64), None)
    y, _ = ssd_scan(x, dt_raw, A, B, C, 4, D=D, dt_bias=dt_bias, dt_softplus=True, dt_limit=(lo, math.inf))
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)


def test_ssd_step_matches_recurrence():
    x, dt_raw, A, B, C, D, dt_bias, state0 = make_inputs(2, 5, 4, 3, 2, 5, seed=11)
    dt = F.softplus(dt_raw + dt_bias)
    y_ref, h_ref = naive_recurrence(x, dt, A, B, C, D, state0, None)
    state = state0.float().clone()
    ys = [
        ssd_step(
            state,
            x[:, i].float(),
            dt_raw[:, i].float(),
            A.float(),
            B[:, i].float(),
            C[:, i].float(),
            D.float(),
            dt_bias.float(),
            dt_softplus=True,
        )
        for i in range(5)
    ]
    torch.testing.assert_close(torch.stack(ys, 1).double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state.double(), h_ref, rtol=1e-4, atol=1e-4)


def test_ssd_scan_gradients_match_recurrence():
    x, dt_raw, A, B, C, D, dt_bias, _ = make_inputs(1, 10, 2, 2, 1, 3, seed=2)
    leaves = [v.clone().requires_grad_() for v in (x, dt_raw, B, C)]
    y, _ = ssd_scan(leaves[0], leaves[1], A, leaves[2], leaves[3], 4, D=D, dt_bias=dt_bias, dt_softplus=True)
    grads = torch.autograd.grad(y.double().pow(2).sum(), leaves)
    ref_leaves = [v.clone().requires_grad_() for v in (x, dt_raw, B, C)]
    dt = F.softplus(ref_leaves[1] + dt_bias)
    y_ref, _ = naive_recurrence(
        ref_leaves[0], dt, A, ref_leaves[2], ref_leaves[3], D, torch.zeros(1, 2, 2, 3, dtype=torch.float64), None
    )
    ref = torch.autograd.grad(y_ref.pow(2).sum(), ref_leaves)
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-3)
