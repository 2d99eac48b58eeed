"""Build a :class:`NemotronHBackbone` from a local Hugging Face ``nemotron_h`` checkpoint."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch

from lightning_viper.backbones.loading import (
    CheckpointError,
    float_dtype,
    load_strict,
    read_config,
    read_state_dict,
    rename_keys,
)
from lightning_viper.backbones.nemotron_h import NemotronHBackbone

log = logging.getLogger(__name__)

# config.json key -> constructor argument (several spellings across transformers / NVIDIA code)
RENAMED = {
    "hidden_size": "hidden_size",
    "vocab_size": "vocab_size",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "mamba_num_heads": "mamba_num_heads",
    "mamba_head_dim": "mamba_head_dim",
    "ssm_state_size": "ssm_state_size",
    "n_groups": "n_groups",
    "mamba_n_groups": "n_groups",
    "conv_kernel": "conv_kernel",
    "mamba_d_conv": "conv_kernel",
    "chunk_size": "chunk_size",
    "mamba_chunk_size": "chunk_size",
    "intermediate_size": "intermediate_size",
    "mlp_hidden_act": "mlp_hidden_act",
    "layer_norm_epsilon": "layer_norm_epsilon",
    "tie_word_embeddings": "tie_word_embeddings",
    "use_bias": "use_bias",
    "use_conv_bias": "use_conv_bias",
    "mamba_conv_bias": "use_conv_bias",
    "mlp_bias": "mlp_bias",
    "attention_bias": "attention_bias",
    "time_step_min": "time_step_min",
    "mamba_dt_min": "time_step_min",
    "time_step_max": "time_step_max",
    "mamba_dt_max": "time_step_max",
    "time_step_floor": "time_step_floor",
    "mamba_dt_init_floor": "time_step_floor",
    "initializer_range": "initializer_range",
}
# keys with no effect on the forward pass (training-time init, generation defaults, metadata,
# transformers' unused MoE/MTP settings when the pattern has no 'E' layer)
IGNORED = {
    "architectures", "auto_map", "model_type", "dtype", "torch_dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "use_cache", "num_logits_to_keep",
    "max_position_embeddings", "attention_dropout", "hidden_dropout", "rescale_prenorm_residual",
    "residual_in_fp32", "use_mamba_kernels", "mamba_ssm_cache_dtype", "expand", "mamba_expand",
    "mamba_proj_bias", "time_step_rank", "time_step_limit", "mamba_dt_limit", "rms_norm_eps",
    "num_hidden_layers", "n_routed_experts", "n_shared_experts", "moe_intermediate_size",
    "moe_shared_expert_intermediate_size", "moe_latent_size", "moe_shared_expert_overlap",
    "num_experts_per_tok", "routed_scaling_factor", "n_group", "topk_group", "norm_topk_prob",
    "output_router_logits", "mtp_layers_block_type", "mtp_hybrid_override_pattern",
    "num_nextn_predict_layers", "sliding_window", "mamba_hidden_act", "hybrid_override_pattern",
    "layers_block_type", "layer_types",
}  # fmt: skip
BLOCK_TYPES = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-", "moe": "E"}


def _pattern(config: dict[str, Any]) -> str:
    blocks = config.get("layers_block_type") or config.get("layer_types")
    if blocks is not None:
        try:
            return "".join(BLOCK_TYPES[b] for b in blocks)
        except KeyError as err:
            raise CheckpointError(f"unknown layer type {err.args[0]!r} in layers_block_type {blocks}") from err
    if "hybrid_override_pattern" in config:
        return str(config["hybrid_override_pattern"])
    raise CheckpointError("config.json has neither layers_block_type nor hybrid_override_pattern")


def _float(value: Any) -> float:
    """JSON float, also 'Infinity' strings and transformers' {"__float__": "Infinity"}."""
    if isinstance(value, dict) and "__float__" in value:
        value = value["__float__"]
    return float(value)


def config_to_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """A ``nemotron_h`` config.json dict -> :class:`NemotronHBackbone` constructor arguments.

    Every key is either mapped or known to be irrelevant to the forward pass; anything else,
    or a setting this backbone cannot honour, raises :class:`CheckpointError`.
    """
    unknown = sorted(set(config) - set(RENAMED) - IGNORED)
    if unknown:
        raise CheckpointError(
            f"config.json has keys this backbone does not know: {unknown}. Check whether they change "
            "the model; if not, add them to IGNORED in lightning_viper/backbones/nemotron_h_loading.py"
        )
    if config.get("model_type", "nemotron_h") != "nemotron_h":
        raise CheckpointError(f"model_type is {config['model_type']!r}, expected 'nemotron_h'")
    if config.get("mamba_hidden_act", "silu") not in ("silu", "swish"):
        raise CheckpointError(f"mamba_hidden_act {config['mamba_hidden_act']!r} is not supported (only 'silu')")
    if config.get("sliding_window") is not None:
        raise CheckpointError("sliding-window attention is not supported (config sets sliding_window)")
    kwargs: dict[str, Any] = {RENAMED[k]: v for k, v in config.items() if k in RENAMED}
    kwargs["pattern"] = _pattern(config)
    layers = config.get("num_hidden_layers")
    if isinstance(layers, int) and layers != len(kwargs["pattern"]):
        log.warning("num_hidden_layers=%d differs from the pattern's %d layers; using the pattern", layers,
                    len(kwargs["pattern"]))  # fmt: skip
    # transformers' NemotronH clamps the softplus time step at time_step_min (not config.time_step_limit)
    kwargs["time_step_limit"] = (_float(config.get("time_step_min", 0.001)), math.inf)
    for key in ("time_step_min", "time_step_max", "time_step_floor", "layer_norm_epsilon", "initializer_range"):
        if key in kwargs:
            kwargs[key] = _float(kwargs[key])
    return kwargs


def load_nemotron_h(
    path: str,
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    prefill_chunk: int | None = None,
    kernels: Literal["auto", "torch", "cuda"] = "auto",
) -> NemotronHBackbone:
    """Load a local ``nemotron_h`` checkpoint directory (config.json + safetensors, sharded or not).

    ``dtype`` is 'float32', 'bfloat16' or 'float16'; the other arguments are the backbone's
    runtime options (checkpointing, chunked prefill, kernel choice).
    Never downloads and never runs checkpoint code.
    """
    torch_dtype = float_dtype(dtype, "load_nemotron_h")
    kwargs = config_to_kwargs(read_config(path))
    state = rename_keys(read_state_dict(path, dtype=torch_dtype), {"model.": "", "backbone.": ""})
    state = {k: v for k, v in state.items() if not k.startswith("mtp.")}  # multi-token-prediction heads
    if kwargs.get("tie_word_embeddings") and "lm_head.weight" in state:
        # the checkpoint stores its own head (transformers' NemotronH never ties): keep it separate
        kwargs["tie_word_embeddings"] = False
    kwargs.update(gradient_checkpointing=gradient_checkpointing, prefill_chunk=prefill_chunk, kernels=kernels)
    with torch.device("meta"):
        model = NemotronHBackbone(**kwargs).to(torch_dtype)
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives every module its own tensor: share the head again
    missing = ["lm_head.weight"] if model.tie_word_embeddings else []
    load_strict(model, state, expected_missing=missing, source=f"checkpoint {path!r}")
    log.info("loaded Nemotron-H (%d layers, %s) from %s", model.num_layers, model.pattern, path)
    return model
