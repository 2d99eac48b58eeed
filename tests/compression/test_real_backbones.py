"""Compression stages inside the real tiny backbones (hybrid Nemotron-H and Qwen2)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones.base import Backbone
from lightning_viper.compression import CompressionStage, TokenDrop, TransV, validate_schedule
from lightning_viper.sequence import SequenceState

from .conftest import make_state


def hybrid() -> Backbone:
    from lightning_viper.backbones.nemotron_h_presets import tiny_hybrid

    return tiny_hybrid()  # 'M-*M-*': attention at layers 2 and 5


def qwen2() -> Backbone:
    from lightning_viper.backbones.qwen2_presets import tiny_qwen2

    return tiny_qwen2()  # 4 decoder layers


def schedules(name: str) -> list[CompressionStage]:
    if name == "hybrid":
        return [TransV(1, 0.5, "uniform"), TokenDrop(5, 0.2, "attention")]
    return [TransV(1, 0.5, "attention"), TokenDrop(3, 0.25, "attention")]


BACKBONES: dict[str, Callable[[], Backbone]] = {"hybrid": hybrid, "qwen2": qwen2}


def build(name: str) -> tuple[Backbone, list[CompressionStage]]:
    torch.manual_seed(0)
    backbone = BACKBONES[name]().eval()
    stages = schedules(name)
    for stage in stages:
        stage.bind(backbone)
    validate_schedule(stages, backbone)
    with torch.no_grad():
        for stage in stages:
            if isinstance(stage, TransV):
                stage.alpha.fill_(0.8)
    return backbone, stages


def recorded(backbone: Backbone, hidden: Tensor, state: SequenceState, stages: list[CompressionStage]) -> list[Tensor]:
    """Outputs of every layer during one forward pass."""
    outputs: list[Tensor] = []
    run = backbone.run_layer

    def spy(index: int, h: Tensor, s: SequenceState, cache: object) -> Tensor:
        out = run(index, h, s, cache)
        outputs.append(out)
        return out

    backbone.run_layer = spy  # type: ignore[method-assign]
    try:
        backbone(hidden, state, stages=stages)
    finally:
        del backbone.run_layer
    return outputs


@pytest.mark.parametrize("name", ["hybrid", "qwen2"])
@torch.no_grad()
def test_layers_before_the_stage_are_untouched(name: str) -> None:
    backbone, stages = build(name)
    state = make_state([[(2, 7, 3, 2)], [(1, 10, 2, 0)], [(3, 5, 1, 1), (2, 9, 4, 0)]])
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size) * state.mask[..., None]
    plain = recorded(backbone, hidden, state, [])
    squeezed = recorded(backbone, hidden, state, stages)
    first = stages[0].layer
    for index in range(first):
        assert torch.equal(plain[index], squeezed[index]), f"layer {index} changed"
    assert squeezed[first].shape[1] < plain[first].shape[1]
    out = backbone(hidden, state, stages=stages)
    assert [r.vision_after for r in out.stages] == [
        sum(int(x) for x in (0.5 * state.num_vision_orig.double() + 0.5).floor()),
        sum(int(x) for x in (float(stages[1].keep) * state.num_vision_orig.double() + 0.5).floor()),
    ]
    assert torch.isfinite(out.hidden).all()
    # bookkeeping of the survivors: non-vision tokens all present, positions contiguous
    assert int((out.state.mask & ~out.state.vision_mask()).sum()) == int((state.mask & ~state.vision_mask()).sum())


@pytest.mark.parametrize("name", ["hybrid", "qwen2"])
@torch.no_grad()
def test_keep_all_and_alpha_zero(name: str) -> None:
    backbone, _ = build(name)
    state = make_state([[(2, 7, 3, 2)], [(1, 10, 2, 0)]])
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size) * state.mask[..., None]
    attn_layer = next(i for i in range(backbone.num_layers) if backbone.is_attention_layer(i))
    keep_all = [TokenDrop(attn_layer, 1.0, "attention")]
    assert torch.equal(backbone(hidden, state, stages=keep_all).hidden, backbone(hidden, state).hidden)
    transv = TransV(attn_layer, 0.3, "attention")
    transv.bind(backbone)
    a = backbone(hidden, state, stages=[transv]).hidden
    b = backbone(hidden, state, stages=[TokenDrop(attn_layer, 0.3, "attention")]).hidden
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["hybrid", "qwen2"])
@torch.no_grad()
def test_generation_prefill_with_compression(name: str) -> None:
    """Prefill with stages + one decode step == a full compressed forward over prompt + that token."""
    backbone, stages = build(name)
    prompt = make_state([[(2, 7, 3, 0)], [(1, 12, 2, 0)], [(3, 4, 5, 0)]])
    whole = make_state([[(2, 7, 3, 1)], [(1, 12, 2, 1)], [(3, 4, 5, 1)]])
    d = backbone.hidden_size
    hidden = torch.randn(prompt.batch_size, prompt.length, d) * prompt.mask[..., None]
    new_token = torch.randn(prompt.batch_size, 1, d)
    cache = backbone.new_cache(prompt.batch_size)
    pre = backbone(hidden, prompt, stages=stages, cache=cache)
    assert pre.hidden.shape[0] == prompt.batch_size and pre.hidden.shape[1] < prompt.length
    torch.testing.assert_close(pre.hidden, backbone(hidden, prompt, stages=stages).hidden, rtol=1e-5, atol=1e-5)
    step = backbone.decode(new_token, cache)
    assert step.shape == (prompt.batch_size, 1, d)
    full = torch.cat([hidden, new_token], 1)  # prompts are already right-aligned (left padding)
    ref = backbone(full, whole, stages=stages).hidden[:, -1:]
    torch.testing.assert_close(step, ref, rtol=1e-4, atol=1e-4)
