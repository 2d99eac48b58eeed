"""Qwen2 building blocks: the SwiGLU MLP and the decoder layer (rotary GQA attention with q/k/v
bias + MLP, each behind an RMSNorm).

Parameter names follow transformers' ``Qwen2DecoderLayer`` (``self_attn.q_proj``, ``mlp.gate_proj``,
``input_layernorm``, ...) so Hugging Face checkpoints load key for key.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.cache import KVCache
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.ops.attention import RowLayout
from lightning_viper.ops.pieces import map_rows


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
        self.self_attn = GQAttention(
            hidden_size, num_heads, num_kv_heads, head_dim, qkv_bias=True, out_bias=False, rope_theta=rope_theta
        )
        self.mlp = Qwen2MLP(hidden_size, intermediate_size)
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)

    @property
    def norm(self) -> RMSNorm:
        """The attention pre-norm."""
        return self.input_layernorm

    def new_cache(self, max_length: int | None = None) -> KVCache:
        return self.self_attn.new_cache(max_length)

    def forward(
        self,
        hidden: Tensor,
        mask: Tensor,
        segment: Tensor,
        position: Tensor | None,
        cache: KVCache | None = None,
        layout: RowLayout | None = None,
    ) -> Tensor:
        """(B, T, D) -> (B, T, D); with a cache, attends to the cached keys too and appends."""
        h = hidden + self.self_attn(self.input_layernorm(hidden), mask, segment, cache, position, layout)
        return h + self.mlp(self.post_attention_layernorm(h))

    def step(self, hidden: Tensor, segment: Tensor, cache: KVCache) -> Tensor:
        """One new token per row (B, 1, D) with its (B, 1) segment -> (B, 1, D); appends to ``cache``."""
        h = hidden + self.self_attn.decode(self.input_layernorm(hidden), segment, cache)
        return h + self.mlp(self.post_attention_layernorm(h))
