"""CLIP vision encoder (transformers' ``CLIPVisionModel``), a second family behind the same
interface as :class:`~lightning_viper.encoders.siglip.SiglipEncoder`.

Features are the patch tokens of ``feature_layer`` (default -2); the CLS token is dropped, so
P = (image_size / patch_size)^2 like SigLIP.
"""

from __future__ import annotations

import logging

from transformers import CLIPVisionConfig, CLIPVisionModel

from lightning_viper.encoders.hf_tower import (
    HFVisionTower,
)

log = logging.getLogger(__name__)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ClipEncoder(HFVisionTower):
    """CLIP frames -> (F, P, Dv) patch features (CLS dropped). Arguments as :class:`SiglipEncoder`."""

    num_prefix_tokens = 1

    def __init__(
        self,
        path: str | None = None,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 64,
        patch_size: int = 8,
        image_size: int = 32,
        feature_layer: int = -2,
        freeze: bool = True,
        micro_batch: int = 64,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        shape = dict(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_layers=num_layers,
            num_heads=num_heads,
            patch_size=patch_size,
            image_size=image_size,
        )
        self._build(
            "CLIP",
            CLIPVisionModel,
            CLIPVisionConfig,
            CLIP_MEAN,
            CLIP_STD,
            path,
            dtype,
            shape,
            feature_layer,
            freeze,
            micro_batch,
        )
