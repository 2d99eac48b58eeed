"""CLIP vision encoder (transformers' ``CLIPVisionModel``), a second family behind the same
interface as :class:`~lightning_viper.encoders.siglip.SiglipEncoder`.

Features are the patch tokens of ``feature_layer`` (default -2); the CLS token is dropped, so
P = (image_size / patch_size)^2 like SigLIP.
"""

from __future__ import annotations

import logging

from transformers import CLIPVisionConfig, CLIPVisionModel

from lightning_viper.encoders.hf_tower import HFVisionTower

log = logging.getLogger(__name__)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ClipEncoder(HFVisionTower):
    """CLIP frames -> (F, P, Dv) patch features (CLS dropped); arguments in :class:`HFVisionTower`."""

    family = "CLIP"
    model_cls = CLIPVisionModel
    config_cls = CLIPVisionConfig
    default_mean = CLIP_MEAN
    default_std = CLIP_STD
    num_prefix_tokens = 1
