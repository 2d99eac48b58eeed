"""Linear layers with their neighbouring elementwise work folded into the GEMM (inference).

A pre-norm block ends ``hidden + proj(act(...))``; run as written, the activation and the residual
add are each a pass over a (T, width) tensor after the GEMM that made it. cuBLAS can do both in the
GEMM itself: ``addmm(C, A, B)`` with beta = 1 adds C while the tile is still in registers, and
cuBLASLt's ReLU epilogue clamps the tile before it is stored. Same maths; the sum is rounded once
(after the add) instead of twice.

These are for autograd-free forwards (prefill, decoding); training keeps the plain modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relu_linear(x: Tensor, linear: nn.Linear) -> Tensor:
    """relu(linear(x)) for (N, K) rows -> (N, out); on CUDA the ReLU (and bias) run in the GEMM's
    epilogue, one cuBLASLt call (a zero bias stands in for a missing one: the epilogue takes one)."""
    if x.dim() != 2:
        raise ValueError(f"relu_linear takes (rows, features), got shape {tuple(x.shape)}")
    if not x.is_cuda:
        return torch.relu(F.linear(x, linear.weight, linear.bias))
    bias = linear.bias if linear.bias is not None else x.new_zeros(linear.out_features)
    return torch._addmm_activation(bias, x, linear.weight.t())  # ReLU is the default epilogue


def add_linear(residual: Tensor, x: Tensor, linear: nn.Linear, out: Tensor | None = None) -> Tensor:
    """residual + linear(x) for (N, out) and (N, K) rows, the residual added by the GEMM (beta = 1);
    written into ``out`` (N, out) when given, which may be ``residual`` itself."""
    if residual.dim() != 2 or x.dim() != 2:
        raise ValueError(f"add_linear takes (rows, features), got {tuple(residual.shape)} and {tuple(x.shape)}")
    if residual.dtype != x.dtype:
        raise ValueError(f"add_linear needs one dtype, got residual {residual.dtype} and input {x.dtype}")
    result = torch.addmm(residual, x, linear.weight.t(), out=out)
    if linear.bias is not None:
        result += linear.bias
    return result
