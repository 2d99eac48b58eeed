"""SigLIP vision encoder (transformers' ``SiglipVisionModel``), the paper's encoder.

Built from a local checkpoint directory (``path``: a SigLIP vision or full SigLIP checkpoint; mean,
std and input size come from its preprocessor_config.json) or, without a path, from a random
config of the given shape (tests and the CPU demo). Features are the hidden states of
``feature_layer`` (default -2, the second-to-last layer, as in the paper), post-layernorm and
pooling head not applied.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from transformers import SiglipVisionConfig, SiglipVisionModel

from lightning_viper.encoders.hf_tower import HFVisionTower

log = logging.getLogger(__name__)

SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]


class SiglipEncoder(HFVisionTower):
    """SigLIP frames -> (F, P, Dv) patch features; arguments in :class:`HFVisionTower`."""

    family = "SigLIP"
    model_cls = SiglipVisionModel
    config_cls = SiglipVisionConfig
    default_mean = SIGLIP_MEAN
    default_std = SIGLIP_STD
    config_extra: ClassVar[dict[str, Any]] = {"vision_use_head": False}  # no pooling head


def siglip_so400m(path: str | None = None, **overrides: Any) -> SiglipEncoder:
    """SigLIP so400m/14 at 384 px (27 x 27 = 729 patches): hidden 1152, 27 layers, 16 heads,
    intermediate 4304. With ``path`` the weights (and shape) come from that checkpoint; without,
    the tower is randomly initialised at this shape."""
    args: dict[str, Any] = dict(
        hidden_size=1152, num_layers=27, num_heads=16, intermediate_size=4304, patch_size=14, image_size=384
    )
    args.update(overrides)
    return SiglipEncoder(path=path, **args)
