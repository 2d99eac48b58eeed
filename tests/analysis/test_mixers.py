"""Knocked-out mixers: no edge removed = the normal forward; removed edges carry nothing."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.analysis.edges import Edges
from lightning_viper.analysis.mixers import Knockout, knocked_mixer
from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.sequence import SequenceState, TokenKind

from .conftest import ROWS, hidden_for, hybrid, make_state, qwen2

BACKBONES = {"hybrid": hybrid, "qwen2": qwen2}


def mixer_layers(backbone: Backbone) -> list[int]:
    return [i for i, k in enumerate(backbone.layer_kinds) if k != "mlp"]


def with_other_video(hidden: torch.Tensor, state: SequenceState) -> torch.Tensor:
    """The same text, different vision inputs."""
    vision = (state.kind == TokenKind.VISION).unsqueeze(-1)
    return torch.where(vision, torch.randn_like(hidden), hidden)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_no_edge_removed_equals_the_normal_forward(name: str) -> None:
    backbone = BACKBONES[name]()
    state = make_state(ROWS)
    hidden = hidden_for(state, backbone.hidden_size)
    with torch.no_grad():
        ref = backbone(hidden, state).hidden
        got = backbone(hidden, state, mixers={i: Knockout(None) for i in mixer_layers(backbone)}).hidden
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_blocking_every_vision_edge_makes_the_text_independent_of_the_video(name: str) -> None:
    backbone = BACKBONES[name]()
    state = make_state(ROWS)
    hidden = hidden_for(state, backbone.hidden_size)
    other = with_other_video(hidden, state)
    text = state.mask & (state.kind != TokenKind.VISION)
    mixers = {i: Knockout("V2T") for i in mixer_layers(backbone)}
    with torch.no_grad():
        free = backbone(hidden, state).hidden, backbone(other, state).hidden
        cut = backbone(hidden, state, mixers=mixers).hidden, backbone(other, state, mixers=mixers).hidden
    after_video = text & (state.kind != TokenKind.TEXT)
    assert (free[0] - free[1])[after_video].abs().max() > 1e-3  # the video matters without knockout
    torch.testing.assert_close(cut[0][text], cut[1][text], rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1])  # Mamba-2, attention
def test_v2i_cuts_instruction_tokens_off_the_video_in_that_layer(layer: int) -> None:
    backbone = hybrid()
    state = make_state(ROWS)
    x = hidden_for(state, backbone.hidden_size)
    other = with_other_video(x, state)
    mixer = backbone.layers[layer].mixer
    edges = Edges.of_flow(state, "V2I")
    instruction = state.kind == TokenKind.INSTRUCTION
    response = state.kind == TokenKind.RESPONSE
    with torch.no_grad():
        a, b = knocked_mixer(mixer, x, state, edges), knocked_mixer(mixer, other, state, edges)
    torch.testing.assert_close(a[instruction], b[instruction], rtol=0, atol=1e-6)
    assert (a - b)[response].abs().max() > 1e-4  # responses still read the video (V2R is not blocked)


def test_the_conv_cut_is_what_keeps_the_first_instruction_tokens_blind() -> None:
    backbone = hybrid()
    mixer = backbone.layers[0].mixer
    assert isinstance(mixer, Mamba2Mixer)
    state = make_state(ROWS)
    x = hidden_for(state, backbone.hidden_size)
    other = with_other_video(x, state)
    edges = Edges.of_flow(state, "V2I")
    first = (state.kind == TokenKind.INSTRUCTION) & (state.kind.roll(1, 1) == TokenKind.VISION)  # right after
    with torch.no_grad():
        plain = mixer.ssd_inputs(x, state.mask, state.segment).x, mixer.ssd_inputs(other, state.mask, state.segment).x
        cut = [mixer.ssd_inputs(v, state.mask, state.segment, (edges.sources, edges.receivers)).x for v in (x, other)]
    assert (plain[0] - plain[1])[first].abs().max() > 1e-4  # the conv taps read the last vision tokens
    torch.testing.assert_close(cut[0][first], cut[1][first], rtol=0, atol=1e-7)
    vision = state.kind == TokenKind.VISION
    torch.testing.assert_close(cut[0][vision], plain[0][vision])  # sources themselves are untouched


def test_mlp_layers_cannot_be_overridden() -> None:
    backbone = hybrid()
    state = make_state(ROWS)
    with pytest.raises(ValueError, match="no token mixer"):
        backbone(hidden_for(state, backbone.hidden_size), state, mixers={2: Knockout("V2I")})


def test_overrides_refuse_a_generation_cache() -> None:
    backbone = hybrid()
    state = make_state(ROWS)
    with pytest.raises(ValueError, match="cache"):
        backbone(hidden_for(state), state, cache=backbone.new_cache(3), mixers={0: Knockout("V2I")})
