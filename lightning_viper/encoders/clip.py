"""CLIP vision encoder (transformers' ``CLIPVisionModel``), a second family behind the same
interface as :class:`~lightning_viper.encoders.siglip.SiglipEncoder`.

Features are the patch tokens of ``feature_layer`` (default -2); the CLS token is dropped, so
P = (image_size / patch_size)^2 like SigLIP.
"""

from __future__ import annotations

import logging

from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from lightning_viper.encoders.hf_tower import (
    HFVisionTower,
    processor_image_size,
    read_preprocessor,
    square,
    torch_dtype,
    vision_checkpoint_dir,
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
        mean, std = CLIP_MEAN, CLIP_STD
        if path is not None:
            root = vision_checkpoint_dir(path, "CLIP")
            self.model = CLIPVisionModel.from_pretrained(str(root), local_files_only=True, dtype=torch_dtype(dtype))
            config = self.model.config
            pre = read_preprocessor(root)
            mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
            self.image_size = processor_image_size(pre, square(config.image_size))
            log.info("loaded CLIP tower from %s", root)
        else:
            config = CLIPVisionConfig(
                hidden_size=hidden_size,
                intermediate_size=intermediate_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                patch_size=patch_size,
                image_size=image_size,
            )
            tower: nn.Module = CLIPVisionModel(config)
            self.model = tower.to(torch_dtype(dtype))
            self.image_size = image_size
        if self.image_size != square(config.image_size):
            raise ValueError(
                f"CLIP's position embeddings are for {config.image_size} px but the preprocessor says "
                f"{self.image_size} px: fix preprocessor_config.json"
            )
        self.embed_dim = int(config.hidden_size)
        self.num_patches = (self.image_size // square(config.patch_size)) ** 2
        self._setup(mean, std, feature_layer, freeze, micro_batch, int(config.num_hidden_layers))
