"""Token bookkeeping shared by the module, the backbones and the compression stages.

A batch of sequences inside the LLM is a padded tensor ``hidden`` of shape (B, T, D) plus a
:class:`SequenceState` of per-token tensors, all (B, T):

* ``mask``     True for real tokens. Padding is on the LEFT, always: left padding keeps
               Mamba-2 states exact (padded inputs are zeroed, and a zero state stays zero) and
               lets batched generation append on the right.
* ``kind``     :class:`TokenKind` of every token (PAD / TEXT / VISION / INSTRUCTION / RESPONSE).
* ``segment``  which sample the token belongs to (global index 0..S-1, -1 for padding). A row
               holds one sample normally and several when sequences are packed; SSM state and
               attention never cross a segment boundary.
* ``position`` position id within its segment, contiguous over the tokens that remain
               (renumbered after dropping, as the TimeViper reference does).
* ``origin``   index of the token in the uncompressed row (-1 for padding); lets callers carry
               labels or other per-token data through any compression.

Per-segment facts live in (S,) tensors: ``segment_row`` (row of each segment) and
``num_vision_orig`` (vision tokens before any compression; compression ratios are fractions of
this number).

INSTRUCTION tokens are the prompt text after the video; the last INSTRUCTION token of a segment
is the query token of attention-guided selection (the last token before the answer in training,
the last prompt token in generation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

import torch
from torch import Tensor


class TokenKind(IntEnum):
    PAD = 0
    TEXT = 1  # prompt text before the video (system prompt, "User:")
    VISION = 2
    INSTRUCTION = 3  # prompt text after the video: the question
    RESPONSE = 4  # answer tokens (training only)


@dataclass(frozen=True)
class SequenceState:
    """Per-token bookkeeping of a left-padded (B, T) batch. See the module docstring."""

    mask: Tensor  # (B, T) bool
    kind: Tensor  # (B, T) int8/long TokenKind
    segment: Tensor  # (B, T) long, -1 on padding
    position: Tensor  # (B, T) long
    origin: Tensor  # (B, T) long, -1 on padding
    segment_row: Tensor  # (S,) long
    num_vision_orig: Tensor  # (S,) long

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    @property
    def num_segments(self) -> int:
        return int(self.segment_row.shape[0])

    def vision_mask(self) -> Tensor:
        """(B, T) bool, True on vision tokens."""
        return self.kind == TokenKind.VISION

    def instruction_mask(self) -> Tensor:
        """(B, T) bool, True on instruction tokens."""
        return self.kind == TokenKind.INSTRUCTION

    def num_vision(self) -> Tensor:
        """(S,) vision tokens currently present in each segment."""
        seg = self.segment[self.vision_mask()]
        return torch.bincount(seg, minlength=self.num_segments)

    def query_index(self) -> Tensor:
        """(S,) column of each segment's last instruction token (in its row).

        Raises if a segment has no instruction token: attention-guided selection needs one.
        """
        cols = torch.arange(self.length, device=self.mask.device).expand_as(self.mask)
        is_instr = self.instruction_mask()
        out = torch.full((self.num_segments,), -1, dtype=torch.long, device=self.mask.device)
        out = out.scatter_reduce(0, self.segment[is_instr], cols[is_instr], reduce="amax")
        if bool((out < 0).any()):
            missing = torch.nonzero(out < 0).flatten().tolist()
            raise ValueError(f"segments {missing} have no instruction tokens after the video")
        return out

    def gather(self, index: Tensor, valid: Tensor) -> SequenceState:
        """Select tokens: ``index`` (B, T') columns into this state, ``valid`` (B, T') bool."""
        pick = lambda x, fill: torch.where(valid, x.gather(1, index), fill)
        segment = pick(self.segment, -1)
        state = replace(
            self,
            mask=valid,
            kind=pick(self.kind, int(TokenKind.PAD)),
            segment=segment,
            origin=pick(self.origin, -1),
            position=torch.zeros_like(index),
        )
        return replace(state, position=contiguous_positions(valid, segment))


def contiguous_positions(mask: Tensor, segment: Tensor) -> Tensor:
    """(B, T) positions 0, 1, 2, ... within each segment over the tokens where mask is True."""
    ones = mask.long()
    csum = ones.cumsum(1)  # (B, T)
    # position = count of real tokens of the same segment before this one
    start_of_seg = torch.ones_like(mask)
    start_of_seg[:, 1:] = segment[:, 1:] != segment[:, :-1]
    seg_base = torch.where(start_of_seg, csum - ones, torch.zeros_like(csum))
    seg_base = torch.cummax(seg_base, dim=1).values
    return torch.where(mask, csum - ones - seg_base, torch.zeros_like(csum))


def left_pad_index(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Indices that compact a (B, T) keep mask into a left-padded (B, T') layout.

    Returns ``index`` (B, T') of source columns (0 where padding) and ``valid`` (B, T') bool,
    with T' = max kept per row. Kept tokens keep their order.
    """
    b, t = keep.shape
    counts = keep.sum(1)  # (B,)
    new_t = int(counts.max().item()) if b else 0
    cols = torch.arange(t, device=keep.device).expand(b, t)
    # sort kept columns to the end in their original order: key = kept * (T + col)
    key = torch.where(keep, cols + t, cols - t)
    order = key.argsort(dim=1)  # kept ones last, in order
    index = order[:, t - new_t :]  # (B, T')
    pos = torch.arange(new_t, device=keep.device).expand(b, new_t)
    valid = pos >= (new_t - counts).unsqueeze(1)
    index = torch.where(valid, index, torch.zeros_like(index))
    return index, valid


def compact(hidden: Tensor, state: SequenceState, keep: Tensor) -> tuple[Tensor, SequenceState]:
    """Drop tokens where ``keep`` (B, T) is False and re-pad on the left.

    ``hidden`` (B, T, D) -> (B, T', D); every per-token tensor of ``state`` follows, padding
    positions of the output are zeros. Padding in the input is always dropped.
    """
    keep = keep & state.mask
    index, valid = left_pad_index(keep)
    out = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, T', D)
    out.masked_fill_(~valid.unsqueeze(-1), 0.0)  # in place: the gather's output is ours (no second copy)
    return out, state.gather(index, valid)


def gather_tokens(values: Tensor, state: SequenceState, fill: int | float) -> Tensor:
    """Carry a per-token tensor of the uncompressed batch (B, T0, ...) to ``state``'s tokens."""
    idx = state.origin.clamp(min=0)
    if values.dim() == 2:
        out = values.gather(1, idx)
    else:
        shape = idx.shape + values.shape[2:]
        out = values.gather(1, idx.view(*idx.shape, *([1] * (values.dim() - 2))).expand(shape))
    mask = state.origin >= 0
    while mask.dim() < out.dim():
        mask = mask.unsqueeze(-1)
    return torch.where(mask, out, torch.full_like(out, fill))
