"""TokenDrop (uniform and attention-guided) against the naive per-segment reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.compression import TokenDrop
from lightning_viper.sequence import SequenceState

from .conftest import FakeBackbone, make_state
from .reference import kept_vision, naive_drop


def assert_matches(out: Tensor, new: SequenceState, ref: dict[str, Tensor]) -> None:
    assert torch.equal(out, ref["hidden"])
    for name in ("mask", "kind", "segment", "position", "origin"):
        assert torch.equal(getattr(new, name).long(), ref[name].long()), name


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.3, 0.5, 0.77, 0.9])
def test_uniform_matches_reference(keep: float, hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    stage = TokenDrop(layer=2, keep=keep, selector="uniform")
    stage.bind(backbone)
    out, new = stage(hidden, state, backbone)
    assert_matches(out, new, naive_drop(hidden, state, kept_vision(state, keep, None)))
    assert torch.equal(new.segment_row, state.segment_row)
    assert torch.equal(new.num_vision_orig, state.num_vision_orig)


@pytest.mark.parametrize("keep", [0.0, 0.2, 0.5, 0.9])
def test_attention_matches_reference(keep: float, hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    g = torch.Generator().manual_seed(3)
    backbone.token_scores = torch.rand(state.batch_size, state.length, generator=g)
    stage = TokenDrop(layer=1, keep=keep, selector="attention")
    stage.bind(backbone)
    out, new = stage(hidden, state, backbone)
    assert_matches(out, new, naive_drop(hidden, state, kept_vision(state, keep, backbone.token_scores)))


def test_attention_keeps_highest_scored_tokens(backbone: FakeBackbone) -> None:
    """Constructed case: the query attends to vision tokens 6, 1 and 4 most; keep 3 of 8."""
    state = make_state([[(1, 8, 2, 0)]])
    scores = torch.zeros(1, state.length)
    for vision_index, value in [(6, 0.5), (1, 0.3), (4, 0.1), (0, 0.01), (7, 0.02)]:
        scores[0, 1 + vision_index] = value
    backbone.token_scores = scores
    hidden = torch.arange(state.length, dtype=torch.float32)[None, :, None].expand(1, -1, 16)
    out, new = TokenDrop(1, 3 / 8, "attention")(hidden, state, backbone)
    vision_cols = new.origin[new.vision_mask()].tolist()
    assert vision_cols == [1 + 1, 1 + 4, 1 + 6]  # kept in original order
    assert out[0, :, 0].tolist() == [0, 2, 5, 7, 9, 10]


def test_keep_one_is_identity(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    backbone.token_scores = torch.rand(state.batch_size, state.length)
    for selector in ("uniform", "attention"):
        out, new = TokenDrop(1, 1.0, selector)(hidden, state, backbone)  # type: ignore[arg-type]
        assert out is hidden and new is state
    assert backbone.score_calls == []  # nothing dropped: no scores needed


def test_keep_one_in_backbone_equals_no_compression(
    hidden: Tensor, state: SequenceState, backbone: FakeBackbone
) -> None:
    backbone.double()
    plain = backbone(hidden, state)
    with_stage = backbone(hidden, state, stages=[TokenDrop(2, 1.0)])
    assert torch.equal(plain.hidden, with_stage.hidden)
    assert torch.equal(plain.state.origin, with_stage.state.origin)


def test_vision_counts_after_stage(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    out, new = TokenDrop(0, 0.5)(hidden, state, backbone)
    # floor(0.5 * n + 0.5) per segment for n = 7, 10, 5, 9, 13
    assert new.num_vision().tolist() == [4, 5, 3, 5, 7, 0]
    # a later stage counts from the ORIGINAL numbers, not from what is left
    _, newer = TokenDrop(1, 0.2)(out, new, backbone)
    assert newer.num_vision().tolist() == [1, 2, 1, 2, 3, 0]


def test_bad_layer_is_rejected_naming_the_stage(backbone: FakeBackbone) -> None:
    with pytest.raises(ValueError, match=r"TokenDrop\(layer=9.*out of range"):
        TokenDrop(9, 0.5).bind(backbone)
    with pytest.raises(ValueError, match=r"TokenDrop\(layer=0, keep=0.5, selector=attention\).*'mamba'"):
        TokenDrop(0, 0.5, "attention").bind(backbone)
    with pytest.raises(ValueError, match="selector must be one of"):
        TokenDrop(1, 0.5, "random").bind(backbone)  # type: ignore[arg-type]
    TokenDrop(3, 0.5, "attention").bind(backbone)  # 'decoder' layers have attention
