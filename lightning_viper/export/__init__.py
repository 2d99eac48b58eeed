"""A VideoLM as a self-contained directory, written by ``viper export`` / ``viper convert`` and read
back with one call (:func:`load`) or from a recipe (:class:`PretrainedVideoLM`). See
:mod:`lightning_viper.export.directory` for the layout."""

from lightning_viper.export.directory import PretrainedVideoLM, build, load, save
from lightning_viper.export.from_checkpoint import export

__all__ = ["PretrainedVideoLM", "build", "export", "load", "save"]
