"""The Transformer baseline backbone: Qwen2 / Qwen2.5 (decoder-only, GQA, RoPE, SwiGLU).

Module and parameter names match transformers' ``Qwen2ForCausalLM`` once the leading ``model.``
is stripped, so a ``save_pretrained`` directory (single file or sharded) loads with
:func:`load_qwen2` and strict key checking. Positions come from ``SequenceState.position`` (per
segment, renumbered after compression), attention from :func:`~lightning_viper.ops.attention.causal_attention`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.base import Backbone, LayerKind
from lightning_viper.backbones.loading import CheckpointError, load_strict, read_config, read_state_dict, rename_keys
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.backbones.qwen2_layers import Qwen2DecoderLayer

log = logging.getLogger(__name__)


class Qwen2Backbone(Backbone):
    """Qwen2 decoder stack with the shared layer loop of :class:`Backbone`.

    Args:
        vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads: shapes.
        head_dim: per-head width; ``hidden_size // num_heads`` when None.
        rope_theta: rotary base. rms_norm_eps: RMSNorm epsilon.
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
        num_heads: int,
        num_kv_heads: int,
        head_dim: int | None = None,
        rope_theta: float = 1_000_000.0,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        gradient_checkpointing: bool = False,
        prefill_chunk: int | None = None,
    ) -> None:
        super().__init__()
        self.set_runtime(gradient_checkpointing, prefill_chunk)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.head_dim = head_dim or hidden_size // num_heads
        self.tie_word_embeddings = tie_word_embeddings
        decoder: LayerKind = "decoder"
        self.layer_kinds = (decoder,) * num_layers
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList(
            Qwen2DecoderLayer(
                hidden_size, intermediate_size, num_heads, num_kv_heads, self.head_dim, rope_theta, rms_norm_eps
            )
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size, rms_norm_eps)
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


def qwen2_args_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of :class:`Qwen2Backbone` from a Hugging Face Qwen2 config.json."""
    if config.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"Qwen2 checkpoint uses hidden_act={config['hidden_act']!r}; only 'silu' is supported")
    if config.get("use_sliding_window", False):
        raise CheckpointError("Qwen2 checkpoint enables sliding-window attention, which this backbone does not do")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"Qwen2 checkpoint uses rope_type={rope_type!r}; only default RoPE is supported")
    theta = config.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        raise CheckpointError("Qwen2 config.json has neither rope_theta nor rope_parameters.rope_theta")
    return dict(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        head_dim=config.get("head_dim"),
        rope_theta=float(theta),
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=config.get("tie_word_embeddings", False),
    )


def load_qwen2(
    path: str, dtype: str = "float32", gradient_checkpointing: bool = False, prefill_chunk: int | None = None
) -> Qwen2Backbone:
    """Build a :class:`Qwen2Backbone` from a local Hugging Face checkpoint directory.

    ``dtype`` names a torch dtype ("float32", "bfloat16", "float16"); ``gradient_checkpointing`` and
    ``prefill_chunk`` are runtime options of the backbone. Never downloads: a missing directory raises
    :class:`CheckpointError` naming it.
    """
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"load_qwen2: dtype {dtype!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
    args = qwen2_args_from_config(read_config(path))
    with torch.device("meta"):  # no random init: the checkpoint overwrites every tensor
        model = Qwen2Backbone(**args, gradient_checkpointing=gradient_checkpointing, prefill_chunk=prefill_chunk)
    model = model.to(torch_dtype).to_empty(device="cpu")
    state = rename_keys(read_state_dict(path, dtype=torch_dtype), {"model.": ""})
    tied = ["lm_head.weight"] if args["tie_word_embeddings"] else []
    load_strict(model, state, expected_unexpected=tied, source=f"Qwen2 checkpoint {str(Path(path))!r}")
    log.info("loaded Qwen2 backbone from %s (%.1fM parameters, %s)", path, model.param_count() / 1e6, dtype)
    return model


__all__ = ["Qwen2Backbone", "load_qwen2", "qwen2_args_from_config"]
