"""Multi-GPU strategies: Lightning's own FSDP, wrapped per decoder layer.

Used from YAML as ``trainer.strategy: {class_path: lightning_viper.distributed.fsdp, init_args: {...}}``.
Each backbone layer (and each vision-encoder layer) becomes one FSDP unit, so parameters are
gathered one layer at a time; activation checkpointing uses the same units.
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def wrap_units() -> set[type[nn.Module]]:
    """The module classes that become FSDP units: every backbone layer and encoder layer."""
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    from lightning_viper.backbones.nemotron_layers import HybridBlock
    from lightning_viper.backbones.qwen2_layers import Qwen2DecoderLayer

    return {HybridBlock, Qwen2DecoderLayer, SiglipEncoderLayer, CLIPEncoderLayer}


def fsdp(
    activation_checkpointing: bool = True,
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"] = "FULL_SHARD",
    state_dict_type: Literal["full", "sharded"] = "sharded",
    cpu_offload: bool = False,
    limit_all_gathers: bool = True,
) -> FSDPStrategy:
    """FSDP with one unit per layer; ``sharded`` checkpoints save and load per rank (fast, resumable)."""
    units = wrap_units()
    return FSDPStrategy(
        auto_wrap_policy=units,
        activation_checkpointing_policy=units if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
        limit_all_gathers=limit_all_gathers,
        use_orig_params=True,  # per-module parameter groups and frozen parts need original params
    )
