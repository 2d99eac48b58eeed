"""The MLP mixer and the pre-norm residual block of the hybrid backbone.

Every mixer is called as ``mixer(x, mask, segment, cache, position, layout)`` with x (B, T, D),
mask (B, T) bool, segment and position (B, T) long and the keys' host-side ``RowLayout`` (read by
attention only, None when unknown), so a block does not care which mixer it holds:
Mamba-2 (:mod:`~lightning_viper.backbones.mamba2`), attention without positions
(:class:`~lightning_viper.backbones.attention.GQAttention`) or the squared-ReLU MLP below.
Names follow transformers' NemotronH so checkpoints load by key.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.cache import KVCache, LayerCache, MambaLayerCache
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.ops import pieces
from lightning_viper.ops.attention import RowLayout
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.ops.linear import add_linear, relu_linear
from lightning_viper.ops.pieces import map_rows


class SquaredReLUMLP(nn.Module):
    """down(relu(up(x))^2)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False, act: str = "relu2") -> None:
        super().__init__()
        if act != "relu2":
            raise ValueError(f"mlp_hidden_act {act!r} is not supported; Nemotron-H uses 'relu2'")
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        segment: Tensor | None = None,
        cache: None = None,
        position: Tensor | None = None,
        layout: RowLayout | None = None,
    ) -> Tensor:
        return map_rows(self._mlp, x)

    def _mlp(self, x: Tensor) -> Tensor:
        out: Tensor = self.down_proj(torch.relu(self.up_proj(x)).square())
        return out

    def add_to(self, residual: Tensor, x: Tensor) -> Tensor:
        """residual + mlp(x) without autograd, (B, T, D) each -> a new (B, T, D), in pieces of
        ``ROWS_PER_PIECE`` rows: the ReLU runs in the up GEMM's epilogue, the square in place and
        the residual add in the down GEMM's (two passes over (T, D) and one over (T, I) fewer
        than ``residual + self(x)``)."""
        if torch.is_grad_enabled():
            raise RuntimeError("SquaredReLUMLP.add_to runs without autograd: use residual + mlp(x) to train")
        rows = residual.shape[:-1].numel()
        flat_x, flat_r = x.reshape(rows, x.shape[-1]), residual.reshape(rows, residual.shape[-1])  # (N, D)
        out = torch.empty_like(flat_r)
        for piece in pieces.slices(rows, pieces.ROWS_PER_PIECE):
            act = relu_linear(flat_x[piece], self.up_proj).square_()  # (n, I)
            add_linear(flat_r[piece], act, self.down_proj, out=out[piece])
        return out.view(residual.shape)


class HybridBlock(nn.Module):
    """x + mixer(norm(x)): the one block type of the hybrid stack."""

    def __init__(
        self, kind: str, mixer: nn.Module, hidden_size: int, eps: float, kernels: KernelChoice = "torch"
    ) -> None:
        super().__init__()
        self.kind = kind
        self.norm = RMSNorm(hidden_size, eps, weight_in_float32=True, kernels=kernels)
        self.mixer = mixer

    def new_cache(self, max_length: int | None = None) -> LayerCache:
        """The mixer's cache entry; ``max_length`` makes an attention layer's KV cache static."""
        if isinstance(self.mixer, GQAttention):
            return self.mixer.new_cache(max_length)
        if isinstance(self.mixer, Mamba2Mixer):
            return self.mixer.new_cache()
        return None

    def forward(
        self,
        hidden: Tensor,
        mask: Tensor,
        segment: Tensor,
        position: Tensor | None,
        cache: LayerCache = None,
        layout: RowLayout | None = None,
    ) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        normed = self.norm(hidden.to(self.norm.weight.dtype))
        if isinstance(self.mixer, SquaredReLUMLP) and self._fused_mlp(hidden, normed):
            return self.mixer.add_to(hidden, normed)  # the residual added inside the down GEMM
        out: Tensor = self.mixer(normed, mask, segment, cache, position, layout)
        return hidden + out

    @staticmethod
    def _fused_mlp(hidden: Tensor, normed: Tensor) -> bool:
        """Whether the MLP may fold its residual add and ReLU into its GEMMs: no autograd, one
        dtype, and no autocast (whose casts the fused calls would bypass: float32 GEMMs under
        bf16-mixed)."""
        return (
            not torch.is_grad_enabled()
            and normed.dtype == hidden.dtype
            and not torch.is_autocast_enabled(hidden.device.type)
        )

    def step(self, hidden: Tensor, segment: Tensor, cache: LayerCache) -> Tensor:
        """One new token per row, (B, 1, D) with its (B, 1) segment -> (B, 1, D)."""
        normed = self.norm(hidden.to(self.norm.weight.dtype))
        if isinstance(self.mixer, Mamba2Mixer):
            if not isinstance(cache, MambaLayerCache):
                raise RuntimeError("a Mamba layer needs its MambaLayerCache to decode")
            return hidden + self.mixer.step(normed, cache)
        if isinstance(self.mixer, GQAttention):
            if not isinstance(cache, KVCache):
                raise RuntimeError("an attention layer needs its KVCache to decode")
            return hidden + self.mixer.decode(normed, segment, cache)
        mask = torch.ones_like(segment, dtype=torch.bool)
        out: Tensor = self.mixer(normed, mask, segment, cache, None)
        return hidden + out
