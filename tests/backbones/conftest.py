"""Generic fixtures for backbone tests: checkpoint directories and hand-made sequence layouts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_viper.sequence import SequenceState, TokenKind


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def tmp_checkpoint(tmp_path: Path) -> Callable[..., str]:
    """``save(model, name="ckpt", max_shard_size=None) -> str``: ``save_pretrained`` a transformers
    model into a fresh directory under tmp_path (sharded when ``max_shard_size`` is given)."""

    def save(model: nn.Module, name: str = "ckpt", max_shard_size: str | None = None) -> str:
        out = tmp_path / name
        kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
        model.save_pretrained(out, **kwargs)  # type: ignore[operator]
        return str(out)

    return save


def layout_state(
    rows: Sequence[Sequence[int]], length: int | None = None, instruction_tail: int = 1, vision: int = 0
) -> SequenceState:
    """A left-padded :class:`SequenceState` from segment lengths per row (packed when > 1 per row).

    Every segment is TEXT, with its first ``vision`` tokens after the first TEXT token marked VISION
    and its last ``instruction_tail`` tokens marked INSTRUCTION. Segment ids count 0..S-1 in row
    order; positions restart at 0 in every segment; ``origin`` is the column.
    """
    b = len(rows)
    t = length if length is not None else max(sum(r) for r in rows)
    mask = torch.zeros(b, t, dtype=torch.bool)
    segment = torch.full((b, t), -1, dtype=torch.long)
    position = torch.zeros(b, t, dtype=torch.long)
    kind = torch.full((b, t), int(TokenKind.PAD), dtype=torch.long)
    seg_rows: list[int] = []
    vision_counts: list[int] = []
    for row, segs in enumerate(rows):
        col = t - sum(segs)
        if col < 0:
            raise ValueError(f"row {row} holds {sum(segs)} tokens, more than length {t}")
        for n in segs:
            s = len(seg_rows)
            mask[row, col : col + n] = True
            segment[row, col : col + n] = s
            position[row, col : col + n] = torch.arange(n)
            kind[row, col : col + n] = int(TokenKind.TEXT)
            nv = max(0, min(vision, n - 1 - instruction_tail))
            kind[row, col + 1 : col + 1 + nv] = int(TokenKind.VISION)
            kind[row, col + n - instruction_tail : col + n] = int(TokenKind.INSTRUCTION)
            seg_rows.append(row)
            vision_counts.append(nv)
            col += n
    origin = torch.where(mask, torch.arange(t).expand(b, t), torch.full((b, t), -1))
    return SequenceState(
        mask=mask,
        kind=kind,
        segment=segment,
        position=position,
        origin=origin,
        segment_row=torch.tensor(seg_rows, dtype=torch.long),
        num_vision_orig=torch.tensor(vision_counts, dtype=torch.long),
    )


def place_tokens(rows: Sequence[Sequence[Sequence[int]]], state: SequenceState, pad_id: int = 0) -> torch.Tensor:
    """(B, T) token ids laid out like ``state``: ``rows[r]`` lists the token ids of each segment."""
    ids = torch.full((state.batch_size, state.length), pad_id, dtype=torch.long)
    for r, segs in enumerate(rows):
        flat = [tok for seg in segs for tok in seg]
        if flat:
            ids[r, state.length - len(flat) :] = torch.tensor(flat)
    return ids


@pytest.fixture
def make_layout() -> Callable[..., SequenceState]:
    """The :func:`layout_state` helper as a fixture."""
    return layout_state
