"""Long-video memory: the prompt splice and a TransV stage make no whole-sequence copies beyond the
one each needs (on an H200 a 102,400-frame prefill peaked at 86 GiB from such copies in splice;
docs/benchmarks.md, "Issue 18, second pass"). Checked on the CPU by watching every aten op's
fresh outputs (outputs that alias an input, i.e. in-place ops, are not new memory)."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.compression import TransV, selection
from lightning_viper.sequence import SequenceState
from lightning_viper.splice import splice

from ..memory_watch import BigOutputs
from .conftest import FakeBackbone, make_state

D = 16


def test_splice_allocates_the_sequence_once() -> None:
    ph, n_vision = 3, 2000
    ids = torch.tensor([[5, ph, 6, 7, 8]])
    text = torch.randn(1, 5, D)
    vision = torch.randn(n_vision, D)
    full = (n_vision + 4) * D * 4  # bytes of one (1, T, D) float32 sequence
    with BigOutputs(full // 2) as watch:
        hidden, _, _ = splice(text, ids, torch.tensor([5]), torch.tensor([5]), vision, torch.tensor([n_vision]), ph)
    assert hidden.shape == (1, n_vision + 4, D)
    assert len(watch.ops) == 1, watch.ops  # the output buffer itself; everything else is written into it


def test_transv_makes_no_whole_sequence_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    backbone = FakeBackbone(dim=D)
    state: SequenceState = make_state([[(2, 3000, 6, 0)]])  # text, vision, instruction, response tokens
    hidden = torch.randn(state.batch_size, state.length, D) * state.mask[..., None]
    stage = TransV(layer=1, keep=0.5)
    stage.bind(backbone)
    stage._KV_CHUNK = 256  # the dropped tokens' K/V in pieces, as on a long video
    monkeypatch.setattr(selection, "GRID_PIECE", 256)  # and their grid filled in pieces
    full = hidden.nbytes
    with torch.no_grad(), BigOutputs(int(full * 0.9)) as watch:
        out, new = stage(hidden, state, backbone)
    assert new.num_vision().tolist() == [1500] and out.shape[1] < hidden.shape[1]
    assert watch.ops == [], watch.ops  # no (B, T, D) copy: only the half-size compacted output and pieces
    with torch.no_grad(), BigOutputs(int(full * 0.4)) as half:
        stage(hidden, state, backbone)
    # half-size tensors: the dropped tokens' grid and the compacted output, nothing more (the grid
    # is filled in pieces: gathering the dropped tokens first was a third, 5.5 GiB at 100k frames)
    assert len(half.ops) <= 2, half.ops
