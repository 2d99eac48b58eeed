"""LLM backbones: each owns its layer loop so compression stages act between layers.

A family is its block layout (``<family>.py`` with its layers), a loader (``<family>_loading.py``: a
Hugging Face checkpoint directory -> the backbone) and presets (``<family>_presets.py``: named shapes).
"""

from lightning_viper.backbones.base import Backbone, BackboneOutput, StageRecord
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_h_loading import load_nemotron_h
from lightning_viper.backbones.nemotron_h_presets import (
    hybrid_2b,
    nemotron_nano_9b_v2,
    nemotron_nano_12b_v2,
    tiny_hybrid,
)
from lightning_viper.backbones.qwen2 import Qwen2Backbone
from lightning_viper.backbones.qwen2_loading import load_qwen2
from lightning_viper.backbones.qwen2_presets import qwen2_5_7b, tiny_qwen2

__all__ = [
    "Backbone",
    "BackboneOutput",
    "NemotronHBackbone",
    "Qwen2Backbone",
    "StageRecord",
    "hybrid_2b",
    "load_nemotron_h",
    "load_qwen2",
    "nemotron_nano_9b_v2",
    "nemotron_nano_12b_v2",
    "qwen2_5_7b",
    "tiny_hybrid",
    "tiny_qwen2",
]
