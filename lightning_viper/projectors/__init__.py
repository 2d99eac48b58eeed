"""Projectors: per-frame encoder features -> LLM-width vision tokens."""

from lightning_viper.projectors.base import Projector
from lightning_viper.projectors.mlp import MLPProjector
from lightning_viper.projectors.tome import ToMeProjector, tome_merge
from lightning_viper.projectors.visionzip import VisionZipProjector, visionzip

__all__ = ["MLPProjector", "Projector", "ToMeProjector", "VisionZipProjector", "tome_merge", "visionzip"]
