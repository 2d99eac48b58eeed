"""Attention and MLP mixers, RMSNorm and the pre-norm residual block of the hybrid backbone.

Every mixer is called as ``mixer(x, mask, segment, cache)`` with x (B, T, D), mask (B, T) bool and
segment (B, T) long, so a block does not care which mixer it holds. Names follow transformers'
NemotronH so checkpoints load by key.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.nemotron_cache import AttentionLayerCache, LayerCache, MambaLayerCache
from lightning_viper.ops.attention import causal_attention
from lightning_viper.ops.pieces import map_rows


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32, cast back to x's dtype."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return map_rows(self._norm, x)

    def _norm(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * h).to(x.dtype)


class HybridAttention(nn.Module):
    """Grouped-query causal self-attention without positional encoding (order comes from Mamba)."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, bias: bool = False) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_attention_heads ({num_heads}) must be a multiple of num_key_value_heads")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=bias)

    def new_cache(self) -> AttentionLayerCache:
        return AttentionLayerCache()

    def heads(self, proj: nn.Linear, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, heads, T, head_dim) through ``proj``."""
        b, t, _ = x.shape
        out: Tensor = proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        return out

    def forward(self, x: Tensor, mask: Tensor, segment: Tensor, cache: AttentionLayerCache | None = None) -> Tensor:
        """x (B, T, D) -> (B, T, D); with a cache, attends to the cached keys too and appends."""
        b, t, _ = x.shape
        q = self.heads(self.q_proj, x)  # (B, Hq, T, hd)
        k, v = self.heads(self.k_proj, x), self.heads(self.v_proj, x)  # (B, Hkv, T, hd)
        key_mask, key_segment = mask, segment
        if cache is not None:
            cache.append(k, v, mask, segment)
            assert cache.key is not None and cache.value is not None
            assert cache.key_mask is not None and cache.key_segment is not None
            k, v, key_mask, key_segment = cache.key, cache.value, cache.key_mask, cache.key_segment
        query_segment = torch.where(mask, segment, torch.full_like(segment, -1))
        out = causal_attention(q, k, v, key_mask, key_segment, query_segment, self.scale)  # (B, Hq, T, hd)
        result: Tensor = self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
        return result


class SquaredReLUMLP(nn.Module):
    """down(relu(up(x))^2)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False, act: str = "relu2") -> None:
        super().__init__()
        if act != "relu2":
            raise ValueError(f"mlp_hidden_act {act!r} is not supported; Nemotron-H uses 'relu2'")
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, segment: Tensor | None = None, cache: None = None
    ) -> Tensor:
        return map_rows(self._mlp, x)

    def _mlp(self, x: Tensor) -> Tensor:
        out: Tensor = self.down_proj(torch.relu(self.up_proj(x)).square())
        return out


Mixer = Mamba2Mixer | HybridAttention | SquaredReLUMLP


class HybridBlock(nn.Module):
    """x + mixer(norm(x)): the one block type of the hybrid stack."""

    def __init__(self, kind: str, mixer: nn.Module, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.kind = kind
        self.norm = RMSNorm(hidden_size, eps)
        self.mixer = mixer

    def new_cache(self) -> LayerCache:
        if isinstance(self.mixer, Mamba2Mixer | HybridAttention):
            return self.mixer.new_cache()
        return None

    def forward(self, hidden: Tensor, mask: Tensor, segment: Tensor, cache: LayerCache = None) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        normed = self.norm(hidden.to(self.norm.weight.dtype))
        out: Tensor = self.mixer(normed, mask, segment, cache)
        return hidden + out

    def step(self, hidden: Tensor, segment: Tensor, cache: LayerCache) -> Tensor:
        """One new token per row, (B, 1, D) with its (B, 1) segment -> (B, 1, D)."""
        normed = self.norm(hidden.to(self.norm.weight.dtype))
        if isinstance(self.mixer, Mamba2Mixer):
            if not isinstance(cache, MambaLayerCache):
                raise RuntimeError("a Mamba layer needs its MambaLayerCache to decode")
            return hidden + self.mixer.step(normed, cache)
        mask = torch.ones_like(segment, dtype=torch.bool)
        out: Tensor = self.mixer(normed, mask, segment, cache)
        return hidden + out
