"""greedy_generate: static caches (``graphs=True``) and sparse finished-row checks give the same tokens."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor

from lightning_viper import generation
from lightning_viper.backbones.base import Backbone
from lightning_viper.generation import greedy_generate
from lightning_viper.sequence import SequenceState
from tests.backbones.conftest import layout_state
from tests.backbones.test_host_syncs import BUILDERS, host_reads

NEW = 9


def setup(name: str, rows: list[list[int]]) -> tuple[Backbone, Tensor, SequenceState]:
    torch.manual_seed(0)
    backbone = BUILDERS[name]().eval()
    state = layout_state(rows)
    ids = torch.randint(1, backbone.vocab_size, (state.batch_size, state.length)) * state.mask
    return backbone, backbone.embed(ids), state


def expected(free: Tensor, eos: int, pad: int) -> Tensor:
    """What stopping at once gives, from tokens decoded without any eos (B, N)."""
    hit = free == eos  # (B, N)
    first = torch.where(hit.any(1), hit.int().argmax(1), free.shape[1])  # (B,) first eos or N
    n = free.shape[1] if bool((first == free.shape[1]).any()) else int(first.max()) + 1
    cols = torch.arange(free.shape[1])[None, :]
    return torch.where(cols >= first[:, None], pad, free)[:, :n]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_graphs_on_the_cpu_decode_eagerly_over_static_caches(name: str, caplog: pytest.LogCaptureFixture) -> None:
    backbone, hidden, state = setup(name, [[10], [7], [12]])
    eager = greedy_generate(backbone, hidden, state, [], NEW, -1, 0)
    with caplog.at_level(logging.INFO, logger="lightning_viper.generation"):
        static = greedy_generate(backbone, hidden, state, [], NEW, -1, 0, graphs=True)
    assert "CUDA graphs need a CUDA device" in caplog.text
    assert eager.tokens.shape == (3, NEW) and torch.equal(static.tokens, eager.tokens)


@pytest.mark.parametrize("rows", [[[10]], [[10], [7]]])
@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sparse_finished_checks_cut_the_tokens_as_stopping_at_once(
    name: str, graphs: bool, rows: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    backbone, hidden, state = setup(name, rows)
    free = greedy_generate(backbone, hidden, state, [], NEW, -1, 0).tokens  # (B, NEW), no eos
    pad = backbone.vocab_size - 1
    lengths = set()
    for eos in {int(free[0, 2]), int(free[-1, 5]), int(free[0, -1])}:
        want = expected(free, eos, pad)
        lengths.add(want.shape[1])
        every_step = greedy_generate(backbone, hidden, state, [], NEW, eos, pad, graphs=graphs).tokens
        monkeypatch.setattr(generation, "stop_check_every", lambda device: 4)
        sparse = greedy_generate(backbone, hidden, state, [], NEW, eos, pad, graphs=graphs).tokens
        monkeypatch.undo()
        assert torch.equal(every_step, want) and torch.equal(sparse, want), f"eos {eos}"
    if len(rows) == 1:
        assert min(lengths) <= 3  # stopped early, between two checks


def test_sparse_checks_read_the_device_once_per_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """9 tokens, checks every 4 steps: the prefill's layout, 2 checks (after steps 4 and 8), the cut."""
    backbone, hidden, state = setup("qwen2", [[10], [7]])
    monkeypatch.setattr(generation, "stop_check_every", lambda device: 4)
    with host_reads() as seen:
        greedy_generate(backbone, hidden, state, [], NEW, -1, 0)
    assert seen == ["tolist", "__bool__", "__bool__", "__int__"]


def test_static_caches_are_whole_256_column_blocks() -> None:
    assert [generation.static_columns(n) for n in (1, 256, 257, 32_832)] == [256, 256, 512, 33_024]
