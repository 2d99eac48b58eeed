"""Which vision tokens a stage keeps: kept counts, uniform and attention-guided selection.

Conventions shared by every dropping strategy (documented in one place so schedules read the same
everywhere):

* **Kept count.** A stage with ratio ``keep`` leaves ``k = floor(keep * n_orig + 0.5)`` vision
  tokens in each segment (round half up), where ``n_orig`` is the segment's vision-token count
  BEFORE any compression (``SequenceState.num_vision_orig``); ``k`` is then clamped to
  ``[0, n_current]``, so a stage never adds tokens. Ratios are therefore absolute targets: a
  schedule 0.5 @ layer 7, 0.1 @ layer 39 keeps 50% then 10% of the original tokens.
* **Uniform selection.** Among the segment's current ``n`` vision tokens (in sequence order,
  indexed ``j = 0..n-1``), the kept ones are ``j_i = floor((i + 0.5) * n / k)`` for
  ``i = 0..k-1``: the centres of ``k`` equal bins. ``k == n`` keeps everything; the indices are
  strictly increasing because ``n / k >= 1``.
* **Attention-guided selection.** The ``k`` vision tokens with the largest score are kept (ties go
  to the earlier token), in their original order.

``rule: "reference"`` (:data:`Rule`) switches to the TimeViper reference code's conventions, for
models trained with it (``viper convert timeviper`` selects it): the kept count is
``k = int(keep * n_orig)`` (truncated, not rounded), uniform picks are ``linspace(0, n - 1, k)``
truncated to integers, ``j_i = floor(i * (n - 1) / (k - 1))`` (the first and last token always
kept; ``j_0 = 0`` when ``k = 1``), and attention scores are computed from the layer's input hidden
states WITHOUT its pre-norm. The default ``"ours"`` is unchanged.

Non-vision tokens are always kept. Everything is vectorised over segments (several per row when
sequences are packed) through a (S, N) grid: row ``s`` holds segment ``s``'s vision tokens in
order, ``N`` = the largest vision count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from lightning_viper.backbones.scores import query_attention
from lightning_viper.ops.pieces import slices
from lightning_viper.sequence import SequenceState

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone

Selector = Literal["uniform", "attention"]
SELECTORS: tuple[str, ...] = ("uniform", "attention")
Rule = Literal["ours", "reference"]
RULES: tuple[str, ...] = ("ours", "reference")


def check_rule(name: str, rule: str) -> None:
    """Raise (naming ``name``) unless ``rule`` is one of :data:`RULES`."""
    if rule not in RULES:
        raise ValueError(f"{name}: rule must be one of {RULES}, got {rule!r}")


def kept_counts(state: SequenceState, keep: float, rule: Rule = "ours") -> Tensor:
    """(S,) vision tokens each segment keeps, clamped to the current count: ``floor(keep * n_orig
    + 0.5)`` (ours) or ``int(keep * n_orig)`` (reference)."""
    orig = state.num_vision_orig.to(torch.float64)
    k = torch.floor(orig * keep + (0.5 if rule == "ours" else 0.0)).long()  # (S,)
    return torch.minimum(k.clamp(min=0), state.num_vision())


def segment_rank(state: SequenceState, which: Tensor) -> Tensor:
    """(B, T) index of each ``which`` (B, T) token among its segment's ``which`` tokens, -1 elsewhere.

    Padding is never ranked. Segments are contiguous runs of a row, so row-major order is
    sequence order within a segment.
    """
    sel = which & state.mask  # (B, T)
    seg = state.segment[sel]  # (Nv,)
    order = torch.sort(seg, stable=True).indices  # (Nv,) grouped by segment, order kept
    counts = torch.bincount(seg, minlength=state.num_segments)  # (S,)
    starts = counts.cumsum(0) - counts
    ranks = torch.empty_like(seg)
    ranks[order] = torch.arange(seg.numel(), device=seg.device) - starts[seg[order]]
    out = torch.full_like(state.segment, -1)
    out[sel] = ranks
    return out


def vision_rank(state: SequenceState) -> Tensor:
    """(B, T) index of each vision token among its segment's vision tokens (0, 1, ...), -1 elsewhere."""
    return segment_rank(state, state.vision_mask())


GRID_PIECE = 65_536  # selected tokens copied into a padded grid at a time


def pad_by_segment(values: Tensor, state: SequenceState, which: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gather the ``which`` tokens of every segment into a padded (S, N, D) grid.

    ``values`` (B, T, D) -> ``grid`` (S, N, D) (zeros where padded), ``valid`` (S, N) bool, and
    ``rank`` (B, T) (each token's slot in its segment's row of the grid, -1 if not selected).
    """
    rank = segment_rank(state, which)
    rows, cols = (rank >= 0).nonzero(as_tuple=True)  # (n,) each, in sequence order
    seg, slot = state.segment[rows, cols], rank[rows, cols]  # (n,) each
    counts = torch.bincount(seg, minlength=state.num_segments)  # (S,)
    width = max(int(counts.max().item()), 1) if counts.numel() else 1
    grid = values.new_zeros(state.num_segments, width, values.shape[-1])  # (S, N, D)
    # copied GRID_PIECE tokens at a time: gathering them all first is a second grid-sized tensor
    # (5.5 GiB for TransV's dropped tokens at 102,400 frames)
    for p in slices(rows.numel(), GRID_PIECE):
        grid[seg[p], slot[p]] = values[rows[p], cols[p]]  # (piece, D) into the fresh grid
    valid = torch.arange(width, device=values.device)[None, :] < counts[:, None]  # (S, N)
    return grid, valid, rank


def grid_to_tokens(grid: Tensor, state: SequenceState, rank: Tensor) -> Tensor:
    """(S, N) bool decisions -> (B, T) keep mask; non-vision real tokens are kept."""
    vis = rank >= 0
    keep = state.mask & ~vis
    keep[vis] = grid[state.segment[vis], rank[vis]]
    return keep


def uniform_keep(state: SequenceState, k: Tensor, rule: Rule = "ours") -> Tensor:
    """(B, T) keep mask of evenly spaced vision tokens, ``k`` (S,) per segment (see module doc):
    bin centres (ours) or truncated ``linspace(0, n - 1, k)`` (reference)."""
    rank = vision_rank(state)
    n = state.num_vision()  # (S,)
    width = max(int(n.max().item()), 1) if n.numel() else 1
    grid = torch.zeros(state.num_segments, width, dtype=torch.bool, device=n.device)  # (S, N)
    i = torch.arange(width, device=n.device).expand(state.num_segments, width)  # (S, N)
    valid = i < k[:, None]
    if rule == "ours":
        idx = ((2 * i + 1) * n[:, None]) // (2 * k[:, None]).clamp(min=1)  # (S, N) bin centres
    else:
        idx = (i * (n[:, None] - 1)) // (k[:, None] - 1).clamp(min=1)  # (S, N) linspace(0, n-1, k), floored
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    rows = torch.arange(state.num_segments, device=n.device)[:, None].expand_as(idx)  # (S, N)
    grid[rows[valid], idx[valid]] = True
    return grid_to_tokens(grid, state, rank)


def topk_keep(scores: Tensor, state: SequenceState, k: Tensor) -> Tensor:
    """(B, T) keep mask of the ``k`` (S,) highest-``scores`` (B, T) vision tokens per segment."""
    rank = vision_rank(state)
    vis = rank >= 0
    n = state.num_vision()
    width = max(int(n.max().item()), 1) if n.numel() else 1
    grid = torch.full((state.num_segments, width), float("-inf"), dtype=torch.float32, device=scores.device)
    grid[state.segment[vis], rank[vis]] = scores[vis].float()
    # stable descending sort: ties keep the earlier token first; padding (-inf) sorts last
    order = torch.sort(grid, dim=1, descending=True, stable=True).indices  # (S, N)
    chosen = torch.arange(width, device=scores.device)[None, :] < k[:, None]  # (S, N) by sorted place
    keep_grid = torch.zeros_like(chosen).scatter(1, order, chosen)
    return grid_to_tokens(keep_grid, state, rank)


def nothing_dropped(state: SequenceState, k: Tensor) -> bool:
    """True when every segment keeps all of its current vision tokens."""
    return bool((k >= state.num_vision()).all())


def check_selector(name: str, selector: str) -> None:
    """Raise (naming the stage ``name``) if ``selector`` is unknown. Whether the layer has
    attention is checked by the stage's ``bind`` (``requires_attention_layer``)."""
    if selector not in SELECTORS:
        raise ValueError(f"{name}: selector must be one of {SELECTORS}, got {selector!r}")


def select_vision(
    selector: str,
    layer: int,
    keep: float,
    hidden: Tensor,
    state: SequenceState,
    backbone: Backbone,
    rule: Rule = "ours",
) -> tuple[Tensor, Tensor]:
    """Decide which tokens stay before ``layer`` under ``rule`` (see the module docstring).

    Returns ``keep_mask`` (B, T) bool (every real non-vision token True) and ``k`` (S,) kept
    vision counts. Attention scores are only computed when something is dropped.
    """
    k = kept_counts(state, keep, rule)
    chosen = select_dropping(selector, layer, k, hidden, state, backbone, rule)
    return (state.mask.clone() if chosen is None else chosen), k


def select_dropping(
    selector: str,
    layer: int,
    k: Tensor,
    hidden: Tensor,
    state: SequenceState,
    backbone: Backbone,
    rule: Rule = "ours",
) -> Tensor | None:
    """The (B, T) keep mask for ``k`` (S,) kept vision counts, None when that drops nothing (the
    stage then returns its input): the one host read of "is anything dropped" per stage."""
    if nothing_dropped(state, k):
        return None
    if selector == "uniform":
        return uniform_keep(state, k, rule)
    if selector == "attention":
        if rule == "ours":
            scores = backbone.attention_scores(layer, hidden, state)  # (B, T) float32
        else:  # the reference scores the layer's raw input: no pre-norm
            scores = query_attention(backbone.attention_layer(layer), hidden, state, None, pre_norm=False)
        return topk_keep(scores, state, k)
    raise ValueError(f"unknown selector {selector!r}; expected one of {SELECTORS}")
