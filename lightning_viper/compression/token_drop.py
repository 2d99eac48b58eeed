"""Plain token dropping (TD): keep a fraction of the vision tokens before one layer, drop the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.selection import (
    Rule,
    Selector,
    check_rule,
    check_selector,
    kept_counts,
    select_dropping,
)
from lightning_viper.sequence import SequenceState, compact

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


class TokenDrop(CompressionStage):
    """Drop vision tokens before layer ``layer`` so that ``keep`` of each sample's original count remains.

    Args:
        layer: index of the layer the stage runs before (0-based).
        keep: fraction of the ORIGINAL vision tokens kept after this stage; the count is
            ``floor(keep * n_orig + 0.5)`` clamped to the tokens present
            (see :mod:`lightning_viper.compression.selection`).
        selector: ``"uniform"`` keeps evenly spaced tokens; ``"attention"`` keeps the tokens the
            last instruction token attends to most at ``layer`` (must be an attention layer).
        rule: ``"ours"`` or ``"reference"`` (the TimeViper reference code's counting, uniform
            picks and pre-norm-free scores; see :mod:`lightning_viper.compression.selection`).

    Non-vision tokens are never dropped; labels, positions and masks follow through
    :func:`~lightning_viper.sequence.compact`. When nothing would be dropped the input is
    returned unchanged.
    """

    def __init__(self, layer: int, keep: float, selector: Selector = "uniform", rule: Rule = "ours") -> None:
        super().__init__(layer, keep)
        self.selector = selector
        self.rule = rule

    @property
    def requires_attention_layer(self) -> bool:
        return self.selector == "attention"

    def bind(self, backbone: Backbone) -> None:
        super().bind(backbone)
        check_selector(self.describe(), self.selector)
        check_rule(self.describe(), self.rule)

    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        """(B, T, D) -> (B, T', D) with the dropped vision tokens removed and re-padded on the left."""
        k = kept_counts(state, self.keep, self.rule)
        keep_mask = select_dropping(self.selector, self.layer, k, hidden, state, backbone, self.rule)
        if keep_mask is None:
            return hidden, state
        return compact(hidden, state, keep_mask)

    def describe(self) -> str:
        rule = "" if self.rule == "ours" else f", rule={self.rule}"
        return f"TokenDrop(layer={self.layer}, keep={self.keep}, selector={self.selector}{rule})"
