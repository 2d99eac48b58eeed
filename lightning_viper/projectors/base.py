"""The projector contract: per-frame patch features -> LLM-width vision tokens."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning_viper.encoders.base import VisionEncoder


class Projector(nn.Module, ABC):
    """Maps (F, P, Dv) encoder features to (F, N, D) tokens for the LLM.

    Widths come from the encoder and backbone: ``VideoLM`` calls :meth:`bind` once, before
    training, so YAML only names what is the projector's own choice (e.g. tokens per frame).
    """

    @abstractmethod
    def bind(self, vision_dim: int, llm_dim: int) -> None:
        """Build the layers for these widths."""

    def attach_encoder(self, encoder: VisionEncoder) -> None:
        """Called once by ``VideoLM`` after :meth:`bind`. A projector that reads more than the
        features (VisionZip: the encoder's attention) keeps its encoder here; the default ignores it."""
        return

    @abstractmethod
    def tokens_per_frame(self, num_patches: int) -> int:
        """N for a frame of ``num_patches`` patches."""

    @abstractmethod
    def forward(self, features: Tensor) -> Tensor:
        """(F, P, Dv) -> (F, N, D)."""

    def describe(self) -> str | None:
        """The token reduction this projector applies, for run names; None when it keeps every patch."""
        return None
