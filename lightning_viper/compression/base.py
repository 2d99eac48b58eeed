"""The compression-stage contract: one stage acts on the hidden sequence before one layer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from torch import Tensor, nn

from lightning_viper.sequence import SequenceState

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


class CompressionStage(nn.Module, ABC):
    """Drops (and possibly transfers) vision tokens before layer ``layer`` of the backbone.

    ``keep`` is the fraction of each sample's ORIGINAL vision-token count that remains after
    this stage (``SequenceState.num_vision_orig``), so a schedule reads as absolute targets.
    A stage that reads attention at its layer overrides ``requires_attention_layer``; ``bind``
    and ``validate_schedule`` then check the layer.
    """

    @property
    def requires_attention_layer(self) -> bool:
        """True when the stage reads attention at its layer (then the layer must have attention)."""
        return False

    def __init__(self, layer: int, keep: float) -> None:
        super().__init__()
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"{type(self).__name__}(layer={layer}): keep must be in [0, 1], got {keep}")
        self.layer = layer
        self.keep = keep

    def bind(self, backbone: Backbone) -> None:
        """Check the stage against the backbone and build any parameters that depend on it.

        Called once by ``VideoLM.__init__``. Raises ``ValueError`` naming the stage on a bad
        layer index, or on a layer without attention when the stage needs one."""
        check_layer(self, backbone)

    @abstractmethod
    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        """(B, T, D) hidden and its state -> (B, T', D) and the state of the kept tokens."""

    def describe(self) -> str:
        return f"{type(self).__name__}(layer={self.layer}, keep={self.keep})"


def check_layer(stage: CompressionStage, backbone: Backbone) -> None:
    """Raise ``ValueError`` naming ``stage`` if its layer is out of range, or has no attention
    while the stage ``requires_attention_layer``: the one place that checks both."""
    n = backbone.num_layers
    if not 0 <= stage.layer < n:
        raise ValueError(
            f"{stage.describe()}: layer {stage.layer} is out of range for a backbone with {n} layers "
            f"(valid: 0..{n - 1})"
        )
    if stage.requires_attention_layer:
        backbone.require_attention_layer(stage.layer, stage.describe())
