"""Build a :class:`~lightning_viper.backbones.qwen2.Qwen2Backbone` from a local Hugging Face Qwen2 checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lightning_viper.backbones.loading import (
    CheckpointError,
    float_dtype,
    load_strict,
    read_config,
    read_state_dict,
    rename_keys,
)
from lightning_viper.backbones.qwen2 import Qwen2Backbone

log = logging.getLogger(__name__)


def config_to_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face Qwen2 config.json dict -> :class:`Qwen2Backbone` constructor arguments; settings this
    backbone cannot honour raise :class:`CheckpointError`."""
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
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        head_dim=config.get("head_dim"),
        rope_theta=float(theta),
        layer_norm_epsilon=config.get("rms_norm_eps", 1e-6),
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
    torch_dtype = float_dtype(dtype, "load_qwen2")
    args = config_to_kwargs(read_config(path))
    with torch.device("meta"):  # no random init: the checkpoint overwrites every tensor
        model = Qwen2Backbone(**args, gradient_checkpointing=gradient_checkpointing, prefill_chunk=prefill_chunk)
    model = model.to(torch_dtype).to_empty(device="cpu")
    state = rename_keys(read_state_dict(path, dtype=torch_dtype), {"model.": ""})
    tied = ["lm_head.weight"] if args["tie_word_embeddings"] else []
    load_strict(model, state, expected_unexpected=tied, source=f"Qwen2 checkpoint {str(Path(path))!r}")
    log.info("loaded Qwen2 backbone from %s (%.1fM parameters, %s)", path, model.param_count() / 1e6, dtype)
    return model
