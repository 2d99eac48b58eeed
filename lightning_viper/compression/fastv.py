"""FastV-style dropping: keep the vision tokens that the text after the video attends to most.

FastV (Chen et al., 2024) ranks image tokens by the attention they receive at one layer and
drops the least attended. Here the score of a vision token is its attention, averaged over heads
and over EVERY instruction token of its segment (the prompt text after the video), where
:class:`~lightning_viper.compression.token_drop.TokenDrop`'s attention selector uses only the
last one. Text before the video cannot attend to it (causal), and response tokens are left out
so that training scores the same tokens as generation does; so "all text tokens" are the
instruction tokens.

The scores come from the backbone contract alone: ``backbone.attention_scores(...,
queries=instruction_mask)`` averages the attention of every instruction token of a segment (each
over its own causal past) in one call. Rotary positions, norms and grouped heads stay the
backbone's business.

FastV's public code ranks by the attention of the LAST token alone (averaged over heads): that
is :class:`~lightning_viper.compression.token_drop.TokenDrop` with ``selector="attention"``. This
stage follows the paper's description (the average over the tokens after the image). On the
demo's needle task the two differ sharply: the last token's best tokens sit on the needle's two
frames, the average's spread over several (README, training-free comparison).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.selection import kept_counts, nothing_dropped, topk_keep
from lightning_viper.sequence import SequenceState, compact

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


@torch.no_grad()
def text_attention(backbone: Backbone, layer: int, hidden: Tensor, state: SequenceState) -> Tensor:
    """(B, T) float32: attention each token receives at ``layer``, averaged over heads and over
    all instruction tokens of its segment (each query sees its own causal past only)."""
    instr = state.instruction_mask() & state.mask  # (B, T)
    counts = torch.bincount(state.segment[instr], minlength=state.num_segments)  # (S,)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"segments {missing} have no instruction tokens after the video to score vision tokens")
    return backbone.attention_scores(layer, hidden, state, queries=instr)


class FastVDrop(CompressionStage):
    """Keep the ``keep`` fraction (of the ORIGINAL vision tokens) most attended by the instruction.

    Args:
        layer: an attention layer; the stage runs before it and scores with its q/k projections.
        keep: fraction of each segment's original vision tokens kept (rounded half up, see
            :mod:`lightning_viper.compression.selection`).
    """

    @property
    def requires_attention_layer(self) -> bool:
        return True

    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        """(B, T, D) -> (B, T', D) keeping the top-scored vision tokens in their original order."""
        k = kept_counts(state, self.keep)
        if nothing_dropped(state, k):
            return hidden, state
        scores = text_attention(backbone, self.layer, hidden, state)
        return compact(hidden, state, topk_keep(scores, state, k))
