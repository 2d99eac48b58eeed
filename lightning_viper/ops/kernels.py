"""Optional CUDA kernels (mamba-ssm, causal-conv1d) behind the signatures of the torch ops.

Each wrapper here has a plain-PyTorch twin with the same arguments and results:
``ssd_scan_cuda`` ~ :func:`lightning_viper.ops.ssd.ssd_scan`, ``ssd_step_cuda`` ~ ``ssd_step``,
``causal_conv1d_cuda`` ~ :func:`lightning_viper.ops.conv.causal_conv1d`, ``causal_conv1d_step_cuda``
~ ``causal_conv1d_step``, ``gated_rmsnorm_cuda`` ~ ``GatedRMSNorm``, ``rmsnorm_cuda`` ~ ``RMSNorm``
(weight applied in float32). The packages compile CUDA code
at install time and are optional:
``pip install --no-build-isolation "mamba-ssm>=2.2" "causal-conv1d>=1.4"`` on a CUDA machine.
"""

from __future__ import annotations

import importlib
import logging
import math
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_viper.ops.conv import run_ids
from lightning_viper.ops.pieces import split_rows, tokens_per_call, within_reach

log = logging.getLogger(__name__)

KernelChoice = Literal["auto", "torch", "cuda"]


def _optional(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


_chunk_scan = _optional("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
_state_update = _optional("mamba_ssm.ops.triton.selective_state_update", "selective_state_update")
_conv_fn = _optional("causal_conv1d", "causal_conv1d_fn")
_conv_update = _optional("causal_conv1d", "causal_conv1d_update")
_gated_rmsnorm = _optional("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn")
_rms_norm = _optional("mamba_ssm.ops.triton.layer_norm", "rms_norm_fn")


def mamba_kernels_available() -> bool:
    """True when mamba-ssm and causal-conv1d import and CUDA is present."""
    return (
        all(f is not None for f in (_chunk_scan, _state_update, _conv_fn, _conv_update, _gated_rmsnorm))
        and torch.cuda.is_available()
    )


def resolve_kernels(choice: KernelChoice, device: torch.device) -> Literal["torch", "cuda"]:
    """'auto' -> 'cuda' when the kernels are installed and ``device`` is CUDA, else 'torch'."""
    if choice == "torch":
        return "torch"
    usable = mamba_kernels_available() and device.type == "cuda"
    if choice == "cuda":
        if not usable:
            raise RuntimeError(
                "kernels='cuda' needs mamba-ssm and causal-conv1d installed and the model on a CUDA device "
                f"(device is {device}); install them or use kernels='auto' / 'torch'"
            )
        return "cuda"
    if choice != "auto":
        raise ValueError(f"kernels must be 'auto', 'torch' or 'cuda', got {choice!r}")
    return "cuda" if usable else "torch"


def ssd_scan_cuda(
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
    """``mamba_chunk_scan_combined``; see :func:`lightning_viper.ops.ssd.ssd_scan` for shapes.

    Labels become run numbers starting at 0, so the initial state belongs to position 0's run.
    x, dt, B and C may be column slices of one projection (a last stride of 1 is all the kernels
    need; they copy what does not have it), read in place while every offset into them fits
    32 bits (the Triton kernels multiply chunk index, chunk size and token stride in int32: past
    that they read wrapped addresses); a slice that reaches further is copied first.
    """
    runs = run_ids(seq_idx).to(torch.int32).contiguous() if seq_idx is not None else None
    y, final = _chunk_scan(
        within_reach(x),
        within_reach(dt),
        A.float(),
        within_reach(B),
        within_reach(C),
        chunk_size,
        D=D,
        z=None,
        dt_bias=dt_bias,
        initial_states=None if initial_state is None else initial_state.float().contiguous(),
        seq_idx=runs,
        dt_softplus=dt_softplus,
        dt_limit=dt_limit,
        return_final_states=True,
    )
    return y, final.float()


def ssd_step_cuda(
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
    """``selective_state_update`` (in place on ``state``); see :func:`lightning_viper.ops.ssd.ssd_step`."""
    p, n = x.shape[-1], state.shape[-1]
    out: Tensor = _state_update(
        state,
        x,
        dt.unsqueeze(-1).expand(-1, -1, p),
        A.float()[:, None, None].expand(-1, p, n),
        B,
        C,
        None if D is None else D[:, None].expand(-1, p),
        z=None,
        dt_bias=None if dt_bias is None else dt_bias[:, None].expand(-1, p),
        dt_softplus=dt_softplus,
    )
    return out


def causal_conv1d_cuda(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    seq_idx: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[Tensor, Tensor]:
    """``causal_conv1d_fn``; see :func:`lightning_viper.ops.conv.causal_conv1d` for shapes.

    Without ``seq_idx`` (every row one run) the kernel reads ``x`` where it lies, e.g. a column
    slice of in_proj's output, and takes and returns the state itself. With it, the carried
    state is prepended as K-1 extra inputs of position 0's run (the kernel takes no state with
    run labels), and those outputs are dropped.
    """
    b, t, c = x.shape
    k = weight.shape[1]
    x = within_reach(x)  # the kernel's offsets are 32-bit
    if seq_idx is None and t >= k - 1 and _channel_last_ok(x):
        init = None if initial_state is None else initial_state.transpose(1, 2).contiguous().transpose(1, 2)
        y, final = _conv_fn(
            x.transpose(1, 2),  # (B, C, T) with stride(1) == 1: no copy
            weight.contiguous(),
            bias,
            initial_states=init,  # (B, C, K-1) channel-last
            return_final_states=True,
            activation=activation,
        )
        return y.transpose(1, 2), final.contiguous()
    hist = x.new_zeros(b, k - 1, c) if initial_state is None else initial_state.transpose(1, 2).to(x.dtype)
    xpad = torch.cat([hist, x], 1).contiguous()  # (B, T+K-1, C) channel-last
    runpad = None
    if seq_idx is not None:
        run = run_ids(seq_idx)
        runpad = torch.cat([run[:, :1].expand(b, k - 1), run], 1)
    y = _conv_fn(
        xpad.transpose(1, 2),  # (B, C, T+K-1) with stride(1) == 1
        weight.contiguous(),
        bias,
        seq_idx=None if runpad is None else runpad.to(torch.int32).contiguous(),
        activation=activation,
    )
    tail = xpad[:, t:]  # (B, K-1, C)
    if runpad is not None:
        tail = tail * (runpad[:, t:] == runpad[:, -1:]).unsqueeze(-1).to(tail.dtype)
    return y.transpose(1, 2)[:, k - 1 :], tail.transpose(1, 2).contiguous()


def _channel_last_ok(x: Tensor) -> bool:
    """Whether causal-conv1d's channel-last kernel takes (B, T, C) ``x`` as it lies: unit channel
    stride and channel count, time and batch strides in multiples of 8 elements."""
    return x.stride(2) == 1 and x.shape[2] % 8 == 0 and x.stride(1) % 8 == 0 and x.stride(0) % 8 == 0


def causal_conv1d_step_cuda(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = "silu"
) -> Tensor:
    """``causal_conv1d_update`` (in place on ``conv_state``); see ``causal_conv1d_step``."""
    out: Tensor = _conv_update(x, conv_state, weight, bias, activation)
    return out


def gated_rmsnorm_cuda(x: Tensor, gate: Tensor, weight: Tensor, eps: float, group_size: int) -> Tensor:
    """mamba-ssm's fused ``rmsnorm_fn``: RMSNorm over groups of ``x * silu(gate)``, times ``weight``.

    One Triton pass in float32 registers instead of PyTorch's float32 temporaries; see
    :class:`lightning_viper.backbones.mamba2.GatedRMSNorm` for the plain twin. (..., C) -> (..., C).
    The kernel offsets rows with 32-bit integers: calls are split so rows x row stride stays under
    :data:`lightning_viper.ops.pieces.INT32_LIMIT` (at 327k tokens one call crashed the process).
    """
    c = x.shape[-1]
    row_stride = max(x.reshape(-1, c).stride(0), gate.reshape(-1, c).stride(0), c)

    def norm(xs: Tensor, zs: Tensor) -> Tensor:
        out: Tensor = _gated_rmsnorm(xs, weight, None, z=zs, eps=eps, group_size=group_size, norm_before_gate=False)
        return out

    return split_rows(norm, tokens_per_call(row_stride), x, gate)


def rmsnorm_available() -> bool:
    """True when mamba-ssm's fused RMSNorm imports and CUDA is present."""
    return _rms_norm is not None and torch.cuda.is_available()


def rmsnorm_cuda(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """mamba-ssm's fused ``rms_norm_fn``: ``(weight * x * rsqrt(mean(x^2) + eps))`` in float32
    registers, one read and one write of ``x`` (the PyTorch form makes four float32 passes).
    (..., D) -> (..., D) in x's dtype; calls split under the kernel's 32-bit row offsets."""
    d = x.shape[-1]

    def norm(xs: Tensor) -> Tensor:
        out: Tensor = _rms_norm(xs, weight, None, eps=eps)
        return out

    return split_rows(norm, tokens_per_call(d), x)
