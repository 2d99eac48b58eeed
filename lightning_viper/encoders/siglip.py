"""SigLIP vision encoder (transformers' ``SiglipVisionModel``), the paper's encoder.

Built from a local checkpoint directory (``path``: a SigLIP vision or full SigLIP checkpoint; mean,
std and input size come from its preprocessor_config.json) or, without a path, from a random
config of the given shape (tests and the CPU demo). Features are the hidden states of
``feature_layer`` (default -2, the second-to-last layer, as in the paper), post-layernorm and
pooling head not applied.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import SiglipVisionConfig, SiglipVisionModel

from lightning_viper.encoders.hf_tower import (
    HFVisionTower,
)

log = logging.getLogger(__name__)

SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]


class SiglipEncoder(HFVisionTower):
    """SigLIP frames -> (F, P, Dv) patch features, P = (image_size / patch_size)^2.

    Args:
        path: local checkpoint directory; when set, the shape arguments below are ignored.
        hidden_size, num_layers, num_heads, intermediate_size, patch_size, image_size: the shape
            of a randomly initialised tower (only without ``path``).
        feature_layer: which layer's output to return (-1 last, -2 second-to-last, ...).
        freeze: no gradients and eval mode for the tower (the paper freezes it in every stage).
        micro_batch: frames per encoder call (bounds activation memory on long videos).
        dtype: parameter dtype ("float32", "bfloat16", "float16").
    """

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
            "SigLIP",
            SiglipVisionModel,
            SiglipVisionConfig,
            SIGLIP_MEAN,
            SIGLIP_STD,
            path,
            dtype,
            shape,
            feature_layer,
            freeze,
            micro_batch,
            vision_use_head=False,
        )


def siglip_so400m(path: str | None = None, **overrides: Any) -> SiglipEncoder:
    """SigLIP so400m/14 at 384 px (27 x 27 = 729 patches): hidden 1152, 27 layers, 16 heads,
    intermediate 4304. With ``path`` the weights (and shape) come from that checkpoint; without,
    the tower is randomly initialised at this shape."""
    args: dict[str, Any] = dict(
        hidden_size=1152, num_layers=27, num_heads=16, intermediate_size=4304, patch_size=14, image_size=384
    )
    args.update(overrides)
    return SiglipEncoder(path=path, **args)
