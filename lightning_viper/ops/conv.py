"""Depthwise causal 1-D convolution with segment resets and a carried state (plain PyTorch).

The reference twin of ``causal_conv1d_fn`` / ``causal_conv1d_update`` (package causal-conv1d),
used on CPU and as the oracle for the CUDA kernels (see :mod:`lightning_viper.ops.kernels`).

Layout is channel-last: ``x`` (B, T, C). A state holds the last K-1 inputs, (B, C, K-1).
``seq_idx`` (B, T) labels contiguous runs (packed samples, padding); the filter never reads an
input of another run, exactly as if every run had been convolved on its own with zero history.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def run_ids(seq_idx: Tensor) -> Tensor:
    """(B, T) labels -> (B, T) long run numbers 0, 0, 1, 1, 2, ... (a new run wherever the label changes).

    Runs are contiguous by construction, so equal run numbers mean "same run" even when a label
    (e.g. -1 for padding) appears twice in a row with something else in between.
    """
    change = torch.zeros_like(seq_idx, dtype=torch.long)
    change[:, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).long()
    return change.cumsum(1)


def _activate(y: Tensor, activation: str | None) -> Tensor:
    if activation is None:
        return y
    if activation in ("silu", "swish"):
        return F.silu(y)
    raise ValueError(f"causal conv1d: activation must be None or 'silu', got {activation!r}")


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    seq_idx: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution ``y_t = act(bias + sum_j weight[:, j] * x_{t-K+1+j})``.

    Args:
        x: (B, T, C) inputs.
        weight: (C, K) filters; ``weight[:, K-1]`` multiplies the current input.
        bias: (C,) or None.
        seq_idx: (B, T) run labels or None; inputs of another run count as zeros.
        initial_state: (B, C, K-1) inputs before position 0, taken to belong to position 0's run
            (the caller zeroes rows whose previous run ended), or None for zeros.
        activation: None or "silu".

    Returns:
        y (B, T, C) in x's dtype, and the final state (B, C, K-1): the last K-1 inputs, zeroed
        where they belong to another run than the last position.
    """
    b, t, c = x.shape
    k = weight.shape[1]
    dtype = weight.dtype
    if initial_state is None:
        history = x.new_zeros(b, k - 1, c, dtype=dtype)
    else:
        history = initial_state.transpose(1, 2).to(dtype)  # (B, K-1, C)
    xpad = torch.cat([history, x.to(dtype)], dim=1)  # (B, T+K-1, C)
    runpad = None
    if seq_idx is not None:
        run = run_ids(seq_idx)  # (B, T)
        runpad = torch.cat([run[:, :1].expand(b, k - 1), run], dim=1)  # (B, T+K-1)
    y = xpad.new_zeros(b, t, c) if bias is None else bias.to(dtype).expand(b, t, c).clone()
    for j in range(k):  # tap j reads the input K-1-j steps back
        term = xpad[:, j : j + t] * weight[:, j]  # (B, T, C)
        if runpad is not None and j < k - 1:
            term = term * (runpad[:, j : j + t] == runpad[:, k - 1 :]).unsqueeze(-1).to(dtype)
        y = y + term
    tail = xpad[:, t:]  # (B, K-1, C) the last K-1 inputs
    if runpad is not None:
        tail = tail * (runpad[:, t:] == runpad[:, -1:]).unsqueeze(-1).to(dtype)
    return _activate(y, activation).to(x.dtype), tail.transpose(1, 2).contiguous().to(x.dtype)


def causal_conv1d_step(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = "silu"
) -> Tensor:
    """One new input per row: x (B, C) -> y (B, C). ``conv_state`` (B, C, K-1) is updated in place."""
    window = torch.cat([conv_state.to(weight.dtype), x.to(weight.dtype).unsqueeze(-1)], dim=-1)  # (B, C, K)
    y = (window * weight).sum(-1)  # (B, C)
    if bias is not None:
        y = y + bias.to(weight.dtype)
    conv_state.copy_(window[..., 1:])
    return _activate(y, activation).to(x.dtype)
