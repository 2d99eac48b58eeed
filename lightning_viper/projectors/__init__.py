"""Projectors: per-frame encoder features -> LLM-width vision tokens."""

from lightning_viper.projectors.base import Projector
from lightning_viper.projectors.mlp import MLPProjector
from lightning_viper.projectors.tome import ToMeProjector, tome_merge

__all__ = ["MLPProjector", "Projector", "ToMeProjector", "tome_merge"]
