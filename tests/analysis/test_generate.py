"""Greedy answers without a cache equal the cached generation."""

from __future__ import annotations

import torch

from lightning_viper.analysis.generate import greedy_full
from lightning_viper.analysis.mixers import Knockout
from lightning_viper.generation import greedy_generate
from lightning_viper.sequence import TokenKind

from .conftest import hidden_for, hybrid, make_state


def test_greedy_without_cache_equals_cached_generation() -> None:
    backbone = hybrid()
    state = make_state([[(2, 10, 4, 0)], [(1, 7, 3, 0)]])  # prompts only: rows of different lengths
    hidden = hidden_for(state) * 5  # larger inputs: varied next tokens
    eos, pad = 63, 0
    ref = greedy_generate(backbone, hidden, state, [], 6, eos, pad).tokens
    got = greedy_full(backbone, hidden, state, [], 6, eos, pad)
    assert ref.shape == (2, 6)
    assert torch.equal(got, ref)
    with_overrides = greedy_full(backbone, hidden, state, [], 6, eos, pad, {0: Knockout(None), 1: Knockout(None)})
    assert torch.equal(with_overrides, ref)


def test_generated_tokens_are_responses_that_v2r_cuts_off() -> None:
    backbone = hybrid()
    state = make_state([[(2, 10, 4, 0)]])
    hidden = hidden_for(state) * 5
    seen: list[torch.Tensor] = []

    def spy(index: int, mixer: torch.nn.Module, x: torch.Tensor, s) -> torch.Tensor:
        seen.append(s.kind.clone())
        return Knockout("V2R")(index, mixer, x, s)

    greedy_full(backbone, hidden, state, [], 3, eos_id=63, pad_id=0, mixers={0: spy})
    assert [int((k == TokenKind.RESPONSE).sum()) for k in seen] == [0, 1, 2]
