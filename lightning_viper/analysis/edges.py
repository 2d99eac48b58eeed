"""Which token-to-token edges a knockout removes: flow from source tokens into receiver tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from lightning_viper.sequence import SequenceState, TokenKind

Flow = Literal["V2I", "V2R", "V2T"]
"""V2I: vision -> instruction (the prompt text after the video); V2R: vision -> response (the
answer); V2T: vision -> every other token (the video's whole influence through the layer)."""

FLOWS: tuple[Flow, ...] = ("V2I", "V2R", "V2T")


@dataclass(frozen=True)
class Edges:
    """Edges j -> i (key j, query i, j <= i) removed inside one layer: ``receivers[i] & sources[j]``."""

    sources: Tensor  # (B, T) bool
    receivers: Tensor  # (B, T) bool

    def blocked(self) -> Tensor:
        """(B, T, T) bool, [b, i, j] = edge j -> i removed (query i, key j)."""
        return self.receivers[:, :, None] & self.sources[:, None, :]

    @staticmethod
    def of_flow(state: SequenceState, flow: Flow) -> Edges:
        """The edges of ``flow`` among the tokens of ``state``."""
        vision = state.vision_mask() & state.mask
        if flow == "V2I":
            receivers = state.kind == TokenKind.INSTRUCTION
        elif flow == "V2R":
            receivers = state.kind == TokenKind.RESPONSE
        elif flow == "V2T":
            receivers = ~vision
        else:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        return Edges(vision, receivers & state.mask)

    @staticmethod
    def none(state: SequenceState) -> Edges:
        """No edge removed (the override then computes the layer's normal output another way)."""
        empty = state.mask & False
        return Edges(empty, empty)
