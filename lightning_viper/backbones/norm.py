"""RMSNorm, the one normalisation of every backbone family and of TransV."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_viper.ops import kernels as ops_kernels
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.ops.pieces import map_rows


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps) over the last dim, (..., D) -> (..., D).

    The statistics are computed in at least float32 (float64 stays float64). Checkpoints differ in
    where the weight is applied: ``weight_in_float32=False`` (Qwen2, Llama) casts the normalised
    x back to the input dtype and then scales; ``True`` (Nemotron-H) scales in float32 and casts
    the product back. Both are exact twins of the transformers models they load from.

    ``kernels`` ('auto' / 'cuda' / 'torch', as the Mamba kernels): with ``weight_in_float32``
    on CUDA, mamba-ssm's fused RMSNorm (the same float32 maths in registers, one pass instead of
    PyTorch's four float32 passes over (T, D)); the PyTorch form otherwise.
    """

    def __init__(
        self, dim: int, eps: float = 1e-6, weight_in_float32: bool = False, kernels: KernelChoice = "torch"
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.weight_in_float32 = weight_in_float32
        self.kernels: KernelChoice = kernels

    def forward(self, x: Tensor) -> Tensor:
        if self._fused(x):
            return ops_kernels.rmsnorm_cuda(x, self.weight, self.eps)
        return map_rows(self._norm, x)  # float32 work in row pieces when autograd is off

    def _fused(self, x: Tensor) -> bool:
        return (
            self.weight_in_float32
            and x.dtype != torch.float64
            and ops_kernels.resolve_kernels(self.kernels, x.device) == "cuda"
            and ops_kernels.rmsnorm_available()
        )

    def _norm(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight_in_float32:
            return (self.weight.to(xf.dtype) * xf).to(x.dtype)
        return self.weight * xf.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, weight_in_float32={self.weight_in_float32}"
