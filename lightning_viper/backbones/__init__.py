"""LLM backbones: each owns its layer loop so compression stages act between layers."""

from lightning_viper.backbones.base import Backbone, BackboneOutput, StageRecord
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_h_loading import load_nemotron_h
from lightning_viper.backbones.presets import nemotron_nano_9b_v2, nemotron_nano_12b_v2, tiny_hybrid
from lightning_viper.backbones.qwen2 import Qwen2Backbone, load_qwen2
from lightning_viper.backbones.qwen2_presets import qwen2_5_7b, tiny_qwen2

__all__ = [
    "Backbone",
    "BackboneOutput",
    "NemotronHBackbone",
    "Qwen2Backbone",
    "StageRecord",
    "load_nemotron_h",
    "load_qwen2",
    "nemotron_nano_9b_v2",
    "nemotron_nano_12b_v2",
    "qwen2_5_7b",
    "tiny_hybrid",
    "tiny_qwen2",
]
