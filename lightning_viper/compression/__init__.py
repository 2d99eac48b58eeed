"""Vision-token compression inside the LLM: one strategy per file, one interface.

Pick stages in YAML by class path; an empty list means no compression::

    compression:
      - class_path: lightning_viper.compression.TransV
        init_args: {layer: 7, keep: 0.5, selector: uniform}
"""

from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.fastv import FastVDrop
from lightning_viper.compression.schedule import validate_schedule
from lightning_viper.compression.temporal_merge import TemporalMerge
from lightning_viper.compression.token_drop import TokenDrop
from lightning_viper.compression.transv import TransV

__all__ = ["CompressionStage", "FastVDrop", "TemporalMerge", "TokenDrop", "TransV", "validate_schedule"]
