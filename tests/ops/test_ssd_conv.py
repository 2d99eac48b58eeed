"""Depthwise causal conv1d (segment resets, carried state) against a naive loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_viper.ops.conv import causal_conv1d, causal_conv1d_step, run_ids


def naive_conv(x, weight, bias, seq_idx, state):
    """y_t = silu(bias + sum_j w[:, j] x_{t-K+1+j}), reading only inputs of the same run.

    ``state`` (b, c, K-1) are the inputs before position 0 (same run as position 0)."""
    b, t, c = x.shape
    k = weight.shape[1]
    hist = torch.cat([state.transpose(1, 2), x], 1)  # (b, t+k-1, c)
    lab = None if seq_idx is None else torch.cat([seq_idx[:, :1].expand(b, k - 1), seq_idx], 1)
    y = torch.zeros(b, t, c, dtype=x.dtype)
    for row in range(b):
        for i in range(t):
            acc = bias.clone()
            for j in range(k):
                src = i + j  # index into hist
                same = lab is None or all(lab[row, s] == lab[row, i + k - 1] for s in range(src, i + k))
                if same:
                    acc = acc + weight[:, j] * hist[row, src]
            y[row, i] = F.silu(acc)
    return y


@pytest.mark.parametrize(("b", "t", "c", "k"), [(1, 1, 3, 4), (2, 9, 5, 4), (3, 6, 2, 2), (2, 2, 4, 4)])
@pytest.mark.parametrize("packed", [False, True])
def test_causal_conv1d_matches_loop(b, t, c, k, packed):
    gen = torch.Generator().manual_seed(b * 31 + t)
    x = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
    weight = torch.randn(c, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(c, generator=gen, dtype=torch.float64)
    state = torch.randn(b, c, k - 1, generator=gen, dtype=torch.float64)
    seq_idx = None
    if packed:
        seq_idx = torch.zeros(b, t, dtype=torch.long)
        for row in range(b):
            seq_idx[row, : row % max(t, 1)] = -1  # left padding
            seq_idx[row, (t + row) // 2 + 1 :] = 5  # a second sample
    y, final = causal_conv1d(x, weight, bias, seq_idx=seq_idx, initial_state=state)
    torch.testing.assert_close(y, naive_conv(x, weight, bias, seq_idx, state))
    # final state: the last K-1 inputs of the last run (zeros for inputs of other runs)
    hist = torch.cat([state.transpose(1, 2), x], 1)[:, -(k - 1) :]
    if seq_idx is not None:
        lab = torch.cat([seq_idx[:, :1].expand(b, k - 1), seq_idx], 1)[:, -(k - 1) :]
        hist = hist * (lab == seq_idx[:, -1:]).unsqueeze(-1)
    torch.testing.assert_close(final, hist.transpose(1, 2))


def test_conv_step_continues_scan():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 6, generator=gen)
    weight, bias = torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)
    y_all, _ = causal_conv1d(x, weight, bias)
    _, state = causal_conv1d(x[:, :7], weight, bias)
    steps = [causal_conv1d_step(x[:, i], state, weight, bias) for i in range(7, 10)]
    torch.testing.assert_close(torch.stack(steps, 1), y_all[:, 7:])
    y_a, s_a = causal_conv1d(x[:, :3], weight, bias)
    y_b, _ = causal_conv1d(x[:, 3:], weight, bias, initial_state=s_a)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_all)


def test_run_ids_are_contiguous_runs():
    seq = torch.tensor([[-1, -1, 0, 0, 1, -1, -1], [3, 3, 3, 3, 3, 3, 3]])
    assert run_ids(seq).tolist() == [[0, 0, 1, 1, 2, 3, 3], [0] * 7]
