"""Temporal merge (FrameFusion / DyCoke-style): a vision token that repeats the same-place token of
the previous frame is merged into it, before one layer, training-free.

A segment's vision tokens are F frames of N tokens each, frame-major, as the projector emits them.
With ``x[f, p]`` the hidden state of frame f, place p (before layer ``layer``)::

    merged[f, p] = f > 0  and  cos(x[f, p], x[f - 1, p]) > threshold
    root[f, p]   = the last frame f' <= f with merged[f', p] False      (a chain follows back)
    kept token at (root, p) = the mean of x[f, p] over its group {f : root[f, p] = root}

Adjacent frames are compared on their tokens as they enter the stage (before any averaging), as
DyCoke does, so a run of near-identical frames collapses into its first frame however long it is.
Merged tokens leave the sequence through :func:`~lightning_viper.sequence.compact` (labels,
positions and padding follow); every non-vision token stays. How many tokens merged is the stage's
record (``vision_before - vision_after``, logged as ``stage{i}_L{layer}_vision_after``) and
``last_merged`` after each call.

Unlike the dropping stages the count is decided by the content, not by ``keep``; the stage must run
before any stage that drops vision tokens (the frame grid is gone after one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.selection import grid_to_tokens, pad_by_segment
from lightning_viper.sequence import SequenceState, compact

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


def temporal_roots(x: Tensor, valid: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Which tokens merge and into which frame.

    ``x`` (S, F, N, D) tokens per segment, frame and place; ``valid`` (S, F, N) real slots.
    Returns ``merged`` (S, F, N) bool and ``root`` (S, F, N) long: the frame each token's group
    keeps (its own frame where not merged).
    """
    s, f, n, _ = x.shape
    merged = torch.zeros(s, f, n, dtype=torch.bool, device=x.device)
    if f > 1:
        sim = F.cosine_similarity(x[:, 1:], x[:, :-1], dim=-1)  # (S, F-1, N)
        merged[:, 1:] = (sim > threshold) & valid[:, 1:] & valid[:, :-1]
    frame = torch.arange(f, device=x.device).view(1, f, 1).expand(s, f, n)
    root = torch.where(merged, torch.full_like(frame, -1), frame).cummax(dim=1).values  # (S, F, N)
    return merged, root


class TemporalMerge(CompressionStage):
    """Merge each vision token into the same-place token of the previous frame when their cosine
    similarity exceeds ``threshold`` (see the module docstring).

    Args:
        layer: the layer the stage runs before (0 = on the projector's tokens, before the LLM).
        threshold: cosine similarity above which a token merges, in [-1, 1] (1 merges nothing).
        tokens_per_frame: vision tokens per frame as they enter the LLM (the projector's count,
            e.g. ToMe's ``tokens_per_frame``); every sample's vision count must be a multiple.
    """

    def __init__(self, layer: int = 0, threshold: float = 0.9, tokens_per_frame: int = 16) -> None:
        super().__init__(layer, keep=1.0)  # an upper bound: the content decides how many stay
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"{self.describe_args(threshold, tokens_per_frame)}: threshold must be in [-1, 1]")
        if tokens_per_frame < 1:
            raise ValueError(f"{self.describe_args(threshold, tokens_per_frame)}: tokens_per_frame must be >= 1")
        self.threshold = threshold
        self.tokens_per_frame = tokens_per_frame
        self.last_merged = 0  # vision tokens merged away in the last call (all segments)

    def describe_args(self, threshold: float, tokens_per_frame: int) -> str:
        return f"TemporalMerge(layer={self.layer}, threshold={threshold}, tokens_per_frame={tokens_per_frame})"

    def describe(self) -> str:
        return self.describe_args(self.threshold, self.tokens_per_frame)

    def _check(self, state: SequenceState) -> None:
        now = state.num_vision()
        if not torch.equal(now, state.num_vision_orig.to(now.device)):
            raise ValueError(
                f"{self.describe()}: vision tokens were already dropped before layer {self.layer}; "
                "list TemporalMerge before every stage that drops tokens (the frame grid is gone after one)"
            )
        bad = torch.nonzero(now % self.tokens_per_frame).flatten().tolist()
        if bad:
            raise ValueError(
                f"{self.describe()}: segments {bad} hold {now[bad].tolist()} vision tokens, not a multiple of "
                f"tokens_per_frame={self.tokens_per_frame}; set it to the projector's tokens per frame"
            )

    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        """(B, T, D) -> (B, T', D): merged vision tokens removed, their groups' means kept."""
        self._check(state)
        self.last_merged = 0
        vis = state.vision_mask() & state.mask  # (B, T)
        if not bool(vis.any()):
            return hidden, state
        grid, valid, rank = pad_by_segment(hidden, state, vis)  # (S, W, D), (S, W), (B, T)
        s, w, d = grid.shape
        n = self.tokens_per_frame
        x = grid.to(torch.promote_types(grid.dtype, torch.float32)).view(s, w // n, n, d)  # (S, F, N, D)
        merged, root = temporal_roots(x, valid.view(s, w // n, n), self.threshold)
        self.last_merged = int(merged.sum())
        if self.last_merged == 0:
            return hidden, state
        place = torch.arange(n, device=grid.device).view(1, 1, n)
        target = (root * n + place).reshape(s, w)  # (S, W) slot of each token's group
        weight = valid.to(x.dtype)  # (S, W)
        sums = torch.zeros_like(x.view(s, w, d)).scatter_add(
            1, target[..., None].expand(s, w, d), x.view(s, w, d) * weight[..., None]
        )  # (S, W, D) at the roots
        counts = torch.zeros_like(weight).scatter_add(1, target, weight)  # (S, W)
        means = (sums / counts.clamp(min=1)[..., None]).to(hidden.dtype)  # (S, W, D)
        kept = valid & ~merged.view(s, w)  # (S, W)
        rows, cols = vis.nonzero(as_tuple=True)
        hidden = hidden.index_put((rows, cols), means[state.segment[vis], rank[vis]])
        return compact(hidden, state, grid_to_tokens(kept, state, rank))
