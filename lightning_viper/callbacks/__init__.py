"""Lightning callbacks of the project."""

from lightning_viper.callbacks.efficiency import EfficiencyMonitor
from lightning_viper.callbacks.nan_guard import NanGuard, NonFiniteTrainingError
from lightning_viper.callbacks.predictions import PredictionWriter
from lightning_viper.callbacks.preemption import Preemption
from lightning_viper.callbacks.seen_samples import SeenSamples

__all__ = ["EfficiencyMonitor", "NanGuard", "NonFiniteTrainingError", "PredictionWriter", "Preemption", "SeenSamples"]
