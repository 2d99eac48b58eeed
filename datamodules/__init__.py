"""LightningDataModules of lightning-viper (WebDataset video shards and the synthetic demo task)."""

from datamodules.synthetic import SyntheticVideoDataModule
from datamodules.video import VideoDataModule

__all__ = ["SyntheticVideoDataModule", "VideoDataModule"]
