"""TemporalMerge against a naive loop over segments, frames and places; padding and packed rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from lightning_viper.cli.main import parse_recipe
from lightning_viper.compression import TemporalMerge, TokenDrop
from lightning_viper.sequence import SequenceState, TokenKind

from .conftest import FakeBackbone, Sample, make_state
from .reference import naive_drop, segment_columns

N = 3  # tokens per frame
# vision counts are multiples of N: 2, 3, 1 (+4 packed) frames and a text-only sample
ROWS: list[list[Sample]] = [[(2, 6, 3, 2)], [(1, 9, 2, 0)], [(3, 3, 1, 1), (2, 12, 4, 0)], [(4, 0, 2, 1)]]


def naive_merge(hidden: Tensor, state: SequenceState, threshold: float) -> tuple[Tensor, dict[int, list[int]], int]:
    """Loop version: hidden with each group's mean at its root column, kept vision columns, merged count."""
    out = hidden.clone()
    kept: dict[int, list[int]] = {}
    merged_total = 0
    for s, (r, cols) in segment_columns(state).items():
        vis = [c for c in cols if int(state.kind[r, c]) == TokenKind.VISION]
        frames = [vis[i : i + N] for i in range(0, len(vis), N)]
        groups: dict[int, list[int]] = {}  # root column -> member columns
        root_of: dict[int, int] = {}
        for f, frame in enumerate(frames):
            for p, c in enumerate(frame):
                root = c
                if f > 0:
                    prev = frames[f - 1][p]
                    cos = torch.dot(hidden[r, c], hidden[r, prev]) / (hidden[r, c].norm() * hidden[r, prev].norm())
                    if float(cos) > threshold:
                        root = root_of[prev]
                        merged_total += 1
                root_of[c] = root
                groups.setdefault(root, []).append(c)
        for root, members in groups.items():
            out[r, root] = torch.stack([hidden[r, m] for m in members]).mean(0)
        kept[s] = sorted(groups)
    return out, kept, merged_total


@pytest.fixture
def state() -> SequenceState:
    return make_state(ROWS)


def repeating_hidden(state: SequenceState, seed: int = 1) -> Tensor:
    """Random tokens where about half of all tokens nearly repeat the same place of the previous frame."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(state.batch_size, state.length, 16, generator=g, dtype=torch.float64)
    for _, (r, cols) in segment_columns(state).items():
        vis = [c for c in cols if int(state.kind[r, c]) == TokenKind.VISION]
        for i in range(N, len(vis)):
            if torch.rand((), generator=g) < 0.6:
                h[r, vis[i]] = h[r, vis[i - N]] + 0.05 * torch.randn(16, generator=g, dtype=torch.float64)
    return h * state.mask[..., None]


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.999])
def test_matches_naive_loop(threshold: float, state: SequenceState) -> None:
    hidden = repeating_hidden(state)
    stage = TemporalMerge(layer=0, threshold=threshold, tokens_per_frame=N)
    stage.bind(FakeBackbone())
    out, new = stage(hidden, state, FakeBackbone())
    merged_hidden, kept, count = naive_merge(hidden, state, threshold)
    ref = naive_drop(merged_hidden, state, kept)
    assert count > 0 and stage.last_merged == count
    assert int(new.vision_mask().sum()) == int(state.vision_mask().sum()) - count
    torch.testing.assert_close(out, ref["hidden"], rtol=1e-12, atol=1e-12)
    for name in ("mask", "kind", "segment", "position", "origin"):
        assert torch.equal(getattr(new, name).long(), ref[name].long()), name


def test_chains_follow_back_to_the_first_frame() -> None:
    state = make_state([[(1, 4 * N, 1, 0)]])  # 4 frames
    hidden = torch.randn(1, state.length, 8, dtype=torch.float64)
    vis = state.vision_mask()[0].nonzero().flatten().tolist()
    for f in range(1, 4):  # place 0 repeats exactly in every frame
        hidden[0, vis[f * N]] = hidden[0, vis[0]] * (1 + f)  # same direction, different norm
    out, new = TemporalMerge(0, 0.99, N)(hidden, state, FakeBackbone())
    assert int(new.vision_mask().sum()) == 4 * N - 3
    expected = torch.stack([hidden[0, vis[f * N]] for f in range(4)]).mean(0)
    first = new.vision_mask()[0].nonzero().flatten()[0]
    torch.testing.assert_close(out[0, first], expected)


def test_threshold_one_merges_nothing(state: SequenceState) -> None:
    hidden = repeating_hidden(state)
    out, new = TemporalMerge(0, 1.0, N)(hidden, state, FakeBackbone())
    assert out is hidden and new is state


def test_errors_name_the_stage(state: SequenceState) -> None:
    hidden = repeating_hidden(state)
    with pytest.raises(ValueError, match=r"TemporalMerge\(.*not a multiple of tokens_per_frame=4"):
        TemporalMerge(0, 0.9, 4)(hidden, state, FakeBackbone())
    dropped, dstate = TokenDrop(0, 0.5)(hidden, state, FakeBackbone())
    with pytest.raises(ValueError, match="before every stage that drops"):
        TemporalMerge(1, 0.9, N)(dropped, dstate, FakeBackbone())
    with pytest.raises(ValueError, match="threshold"):
        TemporalMerge(0, 1.5, N)


def test_selectable_in_yaml() -> None:
    stages = [{"class_path": "lightning_viper.compression.TemporalMerge", "init_args": {"threshold": 0.8}}]
    recipe = Path(__file__).resolve().parents[2] / "recipes/demo.yaml"
    config = parse_recipe(recipe, f"--model.init_args.compression={json.dumps(stages)}")
    (stage,) = config.model.init_args.compression
    assert stage.init_args.threshold == 0.8 and stage.init_args.layer == 0
