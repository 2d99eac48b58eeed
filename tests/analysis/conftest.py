"""Tiny backbones and hand-laid sequences ([text][video][instruction][response], left-padded)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from lightning_viper.backbones import NemotronHBackbone, tiny_qwen2
from lightning_viper.backbones.base import Backbone
from lightning_viper.sequence import SequenceState, TokenKind, contiguous_positions

Sample = tuple[int, int, int, int]  # tokens of (text before the video, vision, instruction, response)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def hybrid(chunk_size: int = 8) -> Backbone:
    """Mamba-2 / attention / MLP, with a scan chunk shorter than the sequences (several chunks)."""
    torch.manual_seed(0)
    return NemotronHBackbone(
        pattern="M*-M*M",
        hidden_size=32,
        vocab_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        mamba_num_heads=4,
        mamba_head_dim=8,
        ssm_state_size=8,
        n_groups=2,
        conv_kernel=4,
        chunk_size=chunk_size,
        intermediate_size=48,
        kernels="torch",
    ).eval()


def qwen2() -> Backbone:
    """Rotary attention decoder layers (width 64)."""
    torch.manual_seed(0)
    return tiny_qwen2().eval()


def make_state(rows: Sequence[Sequence[Sample]]) -> SequenceState:
    """Left-padded rows; a row with several samples is packed (one segment each)."""
    lengths = [sum(sum(s) for s in row) for row in rows]
    b, t = len(rows), max(lengths)
    kind = torch.full((b, t), int(TokenKind.PAD), dtype=torch.long)
    segment = torch.full((b, t), -1, dtype=torch.long)
    seg_rows, vision = [], []
    for r, row in enumerate(rows):
        col = t - lengths[r]
        for sample in row:
            for k, n in zip((TokenKind.TEXT, TokenKind.VISION, TokenKind.INSTRUCTION, TokenKind.RESPONSE), sample,
                            strict=True):  # fmt: skip
                kind[r, col : col + n] = int(k)
                segment[r, col : col + n] = len(seg_rows)
                col += n
            seg_rows.append(r)
            vision.append(sample[1])
    mask = kind != int(TokenKind.PAD)
    return SequenceState(
        mask=mask,
        kind=kind,
        segment=segment,
        position=contiguous_positions(mask, segment),
        origin=torch.where(mask, torch.arange(t).expand(b, t), torch.full((b, t), -1)),
        segment_row=torch.tensor(seg_rows),
        num_vision_orig=torch.tensor(vision),
    )


def hidden_for(state: SequenceState, width: int = 32) -> torch.Tensor:
    """Random (B, T, D) inputs, zero on padding."""
    return torch.randn(state.batch_size, state.length, width) * state.mask.unsqueeze(-1)


ROWS: list[list[Sample]] = [[(2, 12, 5, 3)], [(1, 9, 4, 2)], [(2, 6, 3, 2), (1, 5, 4, 1)]]  # padded; packed
