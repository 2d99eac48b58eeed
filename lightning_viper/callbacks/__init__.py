"""Lightning callbacks of the project."""

from lightning_viper.callbacks.predictions import PredictionWriter
from lightning_viper.callbacks.seen_samples import SeenSamples

__all__ = ["PredictionWriter", "SeenSamples"]
