"""Qwen2 building blocks: RMSNorm, rotary embeddings, GQA attention with q/k/v bias, SwiGLU MLP,
the decoder layer, and the per-layer key/value cache used in generation.

Parameter names follow transformers' ``Qwen2DecoderLayer`` (``self_attn.q_proj``, ``mlp.gate_proj``,
``input_layernorm``, ...) so Hugging Face checkpoints load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_viper.ops.attention import causal_attention
from lightning_viper.ops.pieces import map_rows
from lightning_viper.sequence import SequenceState


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in float32, over the last dim (D)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return map_rows(self._norm, x)  # float32 work in row pieces when autograd is off

    def _norm(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


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


class KVCache:
    """Keys/values of one attention layer, left padded, grown on the right during decoding.

    Lengths may differ between layers (compression drops tokens between layers), so every layer
    keeps its own key mask, segment ids and next rotary position per row.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None  # (B, Hkv, capacity, hd)
        self.v: Tensor | None = None
        self.mask: Tensor | None = None  # (B, capacity) bool
        self.segment: Tensor | None = None  # (B, capacity) long
        self.next_position: Tensor | None = None  # (B,) long
        self.size = 0

    def fill(self, k: Tensor, v: Tensor, state: SequenceState) -> None:
        """Store the prefill keys/values (B, Hkv, T, hd) of the tokens described by ``state``."""
        self.k, self.v = k.detach(), v.detach()
        self.mask, self.segment = state.mask.clone(), state.segment.clone()
        self.next_position = state.position[:, -1] + 1  # last column is a real token (left padding)
        self.size = k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Add one token (B, Hkv, 1, hd) per row, continuing each row's last segment.

        Returns the keys, values (B, Hkv, T+1, hd), key mask and key segments (B, T+1).
        """
        if self.k is None or self.v is None or self.mask is None or self.segment is None:
            raise RuntimeError("KVCache is empty: run a prefill forward with this cache before decoding")
        if self.size == self.k.shape[2]:  # grow the buffers geometrically
            extra = max(self.size, 16)
            grow = lambda x, fill: torch.cat((x, x.new_full((*x.shape[:2], extra, *x.shape[3:]), fill)), dim=2)
            self.k, self.v = grow(self.k, 0), grow(self.v, 0)
            self.mask = torch.cat((self.mask, self.mask.new_zeros(self.mask.shape[0], extra)), 1)
            self.segment = torch.cat((self.segment, self.segment.new_full((self.segment.shape[0], extra), -1)), 1)
        last_segment = self.segment[:, self.size - 1]
        self.k[:, :, self.size] = k[:, :, 0].detach()
        self.v[:, :, self.size] = v[:, :, 0].detach()
        self.mask[:, self.size] = True
        self.segment[:, self.size] = last_segment
        self.size += 1
        n = self.size
        return self.k[:, :, :n], self.v[:, :, :n], self.mask[:, :n], self.segment[:, :n]


class Qwen2Attention(nn.Module):
    """Grouped-query self-attention with biased q/k/v projections and rotary positions."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, rope_theta: float) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.rope_theta = rope_theta
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=True)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=True)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=True)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def query(self, x: Tensor, position: Tensor) -> Tensor:
        """Normed input (B, T, D) and positions (B, T) -> rotated queries (B, Hq, T, hd)."""
        cos, sin = rope_cos_sin(position, self.head_dim, self.rope_theta, x.dtype)
        return apply_rope(self._heads(self.q_proj(x), self.num_heads), cos, sin)

    def key_value(self, x: Tensor, position: Tensor) -> tuple[Tensor, Tensor]:
        """Normed input (B, T, D) -> rotated keys and values, each (B, Hkv, T, hd)."""
        cos, sin = rope_cos_sin(position, self.head_dim, self.rope_theta, x.dtype)
        k = apply_rope(self._heads(self.k_proj(x), self.num_kv_heads), cos, sin)
        return k, self._heads(self.v_proj(x), self.num_kv_heads)

    def output(self, attn: Tensor) -> Tensor:
        """(B, Hq, T, hd) attention result -> (B, T, D)."""
        b, _, t, _ = attn.shape
        return self.o_proj(attn.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class Qwen2MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return map_rows(self._mlp, x)  # (T, 18944)-wide activations in row pieces when autograd is off

    def _mlp(self, x: Tensor) -> Tensor:
        out: Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class Qwen2DecoderLayer(nn.Module):
    """Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h))."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        rope_theta: float,
        rms_norm_eps: float,
    ) -> None:
        super().__init__()
        self.self_attn = Qwen2Attention(hidden_size, num_heads, num_kv_heads, head_dim, rope_theta)
        self.mlp = Qwen2MLP(hidden_size, intermediate_size)
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)

    @property
    def norm(self) -> RMSNorm:
        """The attention pre-norm (the ``.norm`` of the Backbone.attention_module contract)."""
        return self.input_layernorm

    def forward(
        self, hidden: Tensor, state: SequenceState, cache: KVCache | None = None, chunk: int | None = None
    ) -> Tensor:
        """(B, T, D) -> (B, T, D). With ``chunk``, queries and the MLP run ``chunk`` tokens at a
        time against the keys so far (layer-major chunked prefill: peak memory O(chunk * T))."""
        attn = self.self_attn
        x = self.input_layernorm(hidden)  # (B, T, D)
        k, v = attn.key_value(x, state.position)  # (B, Hkv, T, hd)
        if cache is not None:
            cache.fill(k, v, state)
        t = hidden.shape[1]
        step = t if chunk is None or chunk >= t else chunk
        outs = []
        for s in range(0, t, step):
            e = min(s + step, t)
            q = attn.query(x[:, s:e], state.position[:, s:e])  # (B, Hq, c, hd)
            a = causal_attention(
                q, k[:, :, :e], v[:, :, :e], state.mask[:, :e], state.segment[:, :e], state.segment[:, s:e], attn.scale
            )
            h = hidden[:, s:e] + attn.output(a)  # (B, c, D)
            outs.append(h + self.mlp(self.post_attention_layernorm(h)))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def decode(self, hidden: Tensor, cache: KVCache) -> Tensor:
        """One new token per row (B, 1, D) -> (B, 1, D); appends its key/value to ``cache``."""
        attn = self.self_attn
        if cache.next_position is None:
            raise RuntimeError("KVCache is empty: run a prefill forward with this cache before decoding")
        position = cache.next_position.unsqueeze(1)  # (B, 1)
        x = self.input_layernorm(hidden)
        k_new, v_new = attn.key_value(x, position)
        q = attn.query(x, position)  # (B, Hq, 1, hd)
        k, v, mask, segment = cache.append(k_new, v_new)
        cache.next_position = cache.next_position + 1
        a = causal_attention(q, k, v, mask, segment, segment[:, -1:], attn.scale)
        h = hidden + attn.output(a)
        return h + self.mlp(self.post_attention_layernorm(h))
