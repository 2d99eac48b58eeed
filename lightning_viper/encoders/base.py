"""The vision-encoder contract."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class VisionEncoder(nn.Module, ABC):
    """Frames in, patch features out.

    ``forward`` takes uint8 frames (F, 3, H, W) with H = W = ``image_size`` (the datamodule
    resizes), normalises them with the checkpoint's mean/std, and returns (F, P, Dv) features.
    """

    embed_dim: int  # Dv
    num_patches: int  # P
    image_size: int  # H = W in pixels

    def normalise(self, frames: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """uint8 (F, 3, H, W) -> float (F, 3, H, W) in the encoder's input space."""
        if frames.shape[-1] != self.image_size or frames.shape[-2] != self.image_size:
            raise ValueError(
                f"frames are {tuple(frames.shape[-2:])} px but the encoder expects "
                f"{self.image_size}x{self.image_size}: set the datamodule's image_size to {self.image_size}"
            )
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    @abstractmethod
    def forward(self, frames: Tensor) -> Tensor:
        """(F, 3, H, W) uint8 -> (F, P, Dv)."""
