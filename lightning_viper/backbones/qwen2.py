"""The Transformer baseline backbone: Qwen2 / Qwen2.5 (decoder-only, GQA, RoPE, SwiGLU).

Module and parameter names match transformers' ``Qwen2ForCausalLM`` once the leading ``model.``
is stripped, so a ``save_pretrained`` directory (single file or sharded) loads by key with strict
checking (:func:`lightning_viper.backbones.qwen2_loading.load_qwen2`). Positions come from
``SequenceState.position`` (per segment, renumbered after compression), attention from
:func:`~lightning_viper.ops.attention.causal_attention`.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.base import Backbone, LayerKind
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.backbones.qwen2_layers import Qwen2DecoderLayer


class Qwen2Backbone(Backbone):
    """Qwen2 decoder stack with the shared layer loop of :class:`Backbone`.

    Args:
        vocab_size, hidden_size, intermediate_size, num_layers: shapes.
        num_attention_heads, num_key_value_heads: query and key/value heads (grouped-query attention).
        head_dim: per-head width; ``hidden_size // num_attention_heads`` when None.
        rope_theta: rotary base. layer_norm_epsilon: RMSNorm epsilon.
        tie_word_embeddings: the LM head reuses the embedding matrix (no ``lm_head`` parameter).
        gradient_checkpointing: recompute each layer in backward when training.
        prefill_chunk: process each layer's queries (and MLP) in chunks of this many tokens.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        intermediate_size: int,
        num_layers: int,
        num_attention_heads: int,
        num_key_value_heads: int,
        head_dim: int | None = None,
        rope_theta: float = 1_000_000.0,
        layer_norm_epsilon: float = 1e-6,
        tie_word_embeddings: bool = False,
        gradient_checkpointing: bool = False,
        prefill_chunk: int | None = None,
    ) -> None:
        super().__init__()
        self.set_runtime(gradient_checkpointing, prefill_chunk)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.tie_word_embeddings = tie_word_embeddings
        decoder: LayerKind = "decoder"
        self.layer_kinds = (decoder,) * num_layers
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList(
            Qwen2DecoderLayer(
                hidden_size,
                intermediate_size,
                num_attention_heads,
                num_key_value_heads,
                self.head_dim,
                rope_theta,
                layer_norm_epsilon,
            )
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size, layer_norm_epsilon)
        self.lm_head = None if tie_word_embeddings else nn.Linear(hidden_size, vocab_size, bias=False)

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.embed_tokens(input_ids)  # (B, T, D)

    def final_norm(self, hidden: Tensor) -> Tensor:
        return self.norm(hidden)

    def logits(self, hidden: Tensor) -> Tensor:
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return hidden @ weight.t()  # (..., V)

    def _layer(self, index: int) -> Qwen2DecoderLayer:
        layer = self.layers[index]
        assert isinstance(layer, Qwen2DecoderLayer)
        return layer

    def attention_module(self, layer: int) -> GQAttention:
        return self._layer(layer).self_attn

    def attention_norm(self, layer: int) -> RMSNorm:
        return self._layer(layer).input_layernorm
