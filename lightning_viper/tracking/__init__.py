"""Experiment tracking (MLflow on a local sqlite store by default)."""

from lightning_viper.tracking.mlflow import DEFAULT_TRACKING_URI, MLflowLogger

__all__ = ["DEFAULT_TRACKING_URI", "MLflowLogger"]
