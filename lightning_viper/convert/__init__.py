"""Converters from other projects' checkpoints: ``viper convert timeviper SRC DST``."""

from lightning_viper.convert.timeviper import convert_timeviper

__all__ = ["convert_timeviper"]
