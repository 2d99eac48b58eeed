"""FastV-style dropping: keep the vision tokens that the text after the video attends to most.

FastV (Chen et al., 2024) ranks image tokens by the attention they receive at one layer and
drops the least attended. Here the score of a vision token is its attention, averaged over heads
and over EVERY instruction token of its segment (the prompt text after the video), where
:class:`~lightning_viper.compression.token_drop.TokenDrop`'s attention selector uses only the
last one. Text before the video cannot attend to it (causal), and response tokens are left out
so that training scores the same tokens as generation does; so "all text tokens" are the
instruction tokens.

The scores come from the backbone contract alone: ``backbone.attention_scores`` gives the
attention of each segment's LAST instruction token, so the stage asks once per instruction
place ``r``, marking the later instruction tokens as plain text so that the ``r``-th becomes the
last one. Rotary positions, norms and grouped heads stay the backbone's business. Cost: one
scoring call per instruction token of the longest prompt (each one key projection of layer
``layer`` over the sequence), small next to the layer itself for prompts of tens of tokens.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.selection import check_selector, kept_counts, nothing_dropped, segment_rank, topk_keep
from lightning_viper.sequence import SequenceState, TokenKind, compact

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


@torch.no_grad()
def text_attention(backbone: Backbone, layer: int, hidden: Tensor, state: SequenceState) -> Tensor:
    """(B, T) float32: attention each token receives at ``layer``, averaged over heads and over
    all instruction tokens of its segment (each query sees its own causal past only)."""
    instr = state.instruction_mask() & state.mask  # (B, T)
    rank = segment_rank(state, instr)  # (B, T) place among the segment's instruction tokens
    counts = torch.bincount(state.segment[instr], minlength=state.num_segments)  # (S,)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"segments {missing} have no instruction tokens after the video to score vision tokens")
    seg = state.segment.clamp(min=0)  # (B, T)
    total = torch.zeros(state.batch_size, state.length, dtype=torch.float32, device=hidden.device)
    for r in range(int(counts.max())):
        later = instr & (rank > r)  # instruction tokens after place r become plain text
        kind = torch.where(later, torch.full_like(state.kind, int(TokenKind.TEXT)), state.kind)
        scores = backbone.attention_scores(layer, hidden, replace(state, kind=kind))  # (B, T)
        counted = (counts > r)[seg] & state.mask  # segments shorter than r + 1 were already counted
        total = total + scores * counted
    return total / counts[seg].clamp(min=1)


class FastVDrop(CompressionStage):
    """Keep the ``keep`` fraction (of the ORIGINAL vision tokens) most attended by the instruction.

    Args:
        layer: an attention layer; the stage runs before it and scores with its q/k projections.
        keep: fraction of each segment's original vision tokens kept (rounded half up, see
            :mod:`lightning_viper.compression.selection`).
    """

    requires_attention_layer = True

    def bind(self, backbone: Backbone) -> None:
        super().bind(backbone)
        check_selector(self.describe(), "attention", self.layer, backbone)

    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        """(B, T, D) -> (B, T', D) keeping the top-scored vision tokens in their original order."""
        k = kept_counts(state, self.keep)
        if nothing_dropped(state, k):
            return hidden, state
        scores = text_attention(backbone, self.layer, hidden, state)
        return compact(hidden, state, topk_keep(scores, state, k))
