"""Grouped-query causal self-attention, optional rotary positions and biases: the one attention
layer of every backbone family, and the typed view compression stages read it through.

Parameter names (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) follow transformers, so
checkpoints load by key. Nemotron-H uses it without positions (order comes from the Mamba layers)
and with one bias switch for all projections; Qwen2 uses rotary positions and biased q/k/v.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_viper.backbones.cache import KVCache
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.ops.attention import RowLayout, causal_attention


def rope_cos_sin(position: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rotary tables for integer positions (B, T) -> cos, sin of shape (B, 1, T, hd).

    Frequencies theta^(-2i/hd) for i < hd/2, duplicated over both halves (rotate-half layout),
    computed in float32 and cast to ``dtype``.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position.device) / head_dim))
    freqs = position.float().unsqueeze(-1) * inv_freq  # (B, T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
    return emb.cos().to(dtype).unsqueeze(1), emb.sin().to(dtype).unsqueeze(1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, hd) by the tables (B, 1, T, hd): x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class GQAttention(nn.Module):
    """Grouped-query causal self-attention over left-padded, possibly packed sequences.

    Args:
        hidden_size, num_heads, num_kv_heads, head_dim: shapes (num_heads a multiple of num_kv_heads).
        qkv_bias: biases on the q/k/v projections. out_bias: bias on o_proj.
        rope_theta: rotary base; None = no positional encoding.

    Called as ``attn(x, mask, segment, cache, position, layout)`` like every mixer: x (B, T, D),
    mask (B, T) bool, segment (B, T) long, position (B, T) long (needed with rotary positions),
    layout the host-side :class:`~lightning_viper.ops.attention.RowLayout` of the keys it attends
    (cached + new) when the caller knows it (None: read from the device). ``decode`` takes one
    new token per row.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        qkv_bias: bool = False,
        out_bias: bool = False,
        rope_theta: float | None = None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.rope_theta = rope_theta
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=out_bias)

    def new_cache(self, max_length: int | None = None) -> KVCache:
        """An empty cache: dynamic, or static with ``max_length`` columns (see :class:`KVCache`)."""
        return KVCache(max_length)

    def heads(self, proj: nn.Linear, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, heads, T, head_dim) through ``proj``."""
        b, t, _ = x.shape
        out: Tensor = proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        return out

    def _rotate(self, x: Tensor, position: Tensor | None) -> Tensor:
        if self.rope_theta is None:
            return x
        if position is None:
            raise ValueError("this attention layer uses rotary positions: pass position (B, T)")
        cos, sin = rope_cos_sin(position, self.head_dim, self.rope_theta, x.dtype)
        return apply_rope(x, cos, sin)

    def query(self, x: Tensor, position: Tensor | None = None) -> Tensor:
        """Normed input (B, T, D) and positions (B, T) -> queries (B, Hq, T, hd), rotated if rotary."""
        return self._rotate(self.heads(self.q_proj, x), position)

    def key(self, x: Tensor, position: Tensor | None = None) -> Tensor:
        """Normed input (B, T, D) -> keys (B, Hkv, T, hd), rotated if rotary."""
        return self._rotate(self.heads(self.k_proj, x), position)

    def key_value(self, x: Tensor, position: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normed input (B, T, D) -> keys (rotated if rotary) and values, each (B, Hkv, T, hd)."""
        return self.key(x, position), self.heads(self.v_proj, x)

    def output(self, attn: Tensor) -> Tensor:
        """(B, Hq, T, hd) attention result -> (B, T, D)."""
        b, _, t, _ = attn.shape
        out: Tensor = self.o_proj(attn.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))
        return out

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        segment: Tensor,
        cache: KVCache | None = None,
        position: Tensor | None = None,
        layout: RowLayout | None = None,
    ) -> Tensor:
        """x (B, T, D) -> (B, T, D); with a cache, attends to the cached keys too and appends."""
        q = self.query(x, position)  # (B, Hq, T, hd)
        k, v = self.key_value(x, position)  # (B, Hkv, T, hd)
        key_mask, key_segment = mask, segment
        if cache is not None:
            k, v, key_mask, key_segment = cache.append(k, v, mask, segment, position)
        query_segment = torch.where(mask, segment, torch.full_like(segment, -1))
        return self.output(causal_attention(q, k, v, key_mask, key_segment, query_segment, self.scale, layout))

    def decode(self, x: Tensor, segment: Tensor, cache: KVCache) -> Tensor:
        """One new token per row after the prefill: x (B, 1, D) of segment (B, 1) -> (B, 1, D).

        Appends to ``cache`` (in place when it is static) and attends every cached key of the
        token's segment in one masked call: no host sync, fixed shapes with a static cache."""
        if cache.next_position is None and (self.rope_theta is not None or cache.k is None):
            raise RuntimeError("KVCache is empty: run a prefill forward with this cache before decoding")
        position = None if cache.next_position is None else cache.next_position.unsqueeze(1)  # (B, 1)
        q = self.query(x, position)  # (B, Hq, 1, hd)
        k, v = self.key_value(x, position)  # (B, Hkv, 1, hd)
        keys, values, key_mask, key_segment = cache.append_token(k, v, segment)
        return self.output(causal_attention(q, keys, values, key_mask, key_segment, segment, self.scale))


@dataclass(frozen=True)
class AttentionLayer:
    """What a compression stage may read of one attention layer of a backbone.

    ``attention`` holds the projections (``q_proj`` .. ``o_proj``), head counts, head width and
    rotary base; ``norm`` is the layer's pre-norm (``norm.weight``, ``norm.eps``), applied to the
    layer's input before the projections.
    """

    index: int
    attention: GQAttention
    norm: RMSNorm

    @property
    def num_heads(self) -> int:
        return self.attention.num_heads

    @property
    def num_kv_heads(self) -> int:
        return self.attention.num_kv_heads

    @property
    def head_dim(self) -> int:
        return self.attention.head_dim

    @property
    def eps(self) -> float:
        return float(self.norm.eps)

    @property
    def norm_weight(self) -> Tensor:
        return self.norm.weight

    def projections(self) -> dict[str, nn.Linear]:
        a = self.attention
        return {"q_proj": a.q_proj, "k_proj": a.k_proj, "v_proj": a.v_proj, "o_proj": a.o_proj}
