"""TransV against the naive transfer equation, plus its invariants (alpha = 0, gradients, binding)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.compression import TokenDrop, TransV
from lightning_viper.sequence import SequenceState

from .conftest import FakeBackbone, make_state
from .reference import kept_vision, naive_drop, naive_transfer


def bound(backbone: FakeBackbone, **kwargs: object) -> TransV:
    backbone.double()
    stage = TransV(**kwargs)  # type: ignore[arg-type]
    stage.bind(backbone)
    return stage


@pytest.mark.parametrize("kv_chunk", [None, 2])  # 2: the dropped tokens' K/V in pieces (the long-video path)
@pytest.mark.parametrize("selector", ["uniform", "attention"])
@pytest.mark.parametrize("keep", [0.0, 0.3, 0.5])
def test_matches_reference(
    selector: str, keep: float, kv_chunk: int | None, hidden: Tensor, state: SequenceState, backbone: FakeBackbone
) -> None:
    backbone.token_scores = torch.rand(state.batch_size, state.length, generator=torch.Generator().manual_seed(5))
    stage = bound(backbone, layer=1, keep=keep, selector=selector)
    if kv_chunk is not None:
        stage._KV_CHUNK = kv_chunk
    with torch.no_grad():
        stage.alpha.fill_(0.7)
    with torch.set_grad_enabled(kv_chunk is None):  # the piece-wise K/V runs without autograd
        out, new = stage(hidden, state, backbone)
    kept = kept_vision(state, keep, backbone.token_scores if selector == "attention" else None)
    ref = naive_drop(naive_transfer(hidden, state, kept, stage), state, kept)
    torch.testing.assert_close(out, ref["hidden"], rtol=1e-10, atol=1e-10)
    for name in ("mask", "kind", "segment", "position", "origin"):
        assert torch.equal(getattr(new, name).long(), ref[name].long()), name
    moved = (out - naive_drop(hidden, state, kept)["hidden"]).abs().sum()
    assert moved > 0.1  # the transfer really changed the instruction tokens


def test_own_heads_without_init(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    stage = bound(backbone, layer=0, keep=0.4, init_from_attention=False, num_heads=2)
    assert (stage.q_heads, stage.kv_heads, stage.head_dim) == (2, 2, 8)
    with torch.no_grad():
        stage.alpha.fill_(-1.3)
    out, _ = stage(hidden, state, backbone)
    kept = kept_vision(state, 0.4, None)
    ref = naive_drop(naive_transfer(hidden, state, kept, stage), state, kept)
    torch.testing.assert_close(out, ref["hidden"], rtol=1e-10, atol=1e-10)


def test_alpha_zero_equals_token_drop(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    backbone.token_scores = torch.rand(state.batch_size, state.length)
    for selector in ("uniform", "attention"):
        transv = bound(backbone, layer=3, keep=0.3, selector=selector)
        drop = TokenDrop(3, 0.3, selector)  # type: ignore[arg-type]
        a, sa = transv(hidden, state, backbone)
        b, sb = drop(hidden, state, backbone)
        assert torch.equal(a, b)
        assert torch.equal(sa.origin, sb.origin) and torch.equal(sa.position, sb.position)
        full_a = backbone(hidden, state, stages=[transv])
        full_b = backbone(hidden, state, stages=[drop])
        assert torch.equal(full_a.hidden, full_b.hidden)


def test_keep_one_equals_no_compression(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    stage = bound(backbone, layer=1, keep=1.0)
    with torch.no_grad():
        stage.alpha.fill_(1.0)
    assert torch.equal(backbone(hidden, state, stages=[stage]).hidden, backbone(hidden, state).hidden)


def test_init_copies_nearest_attention_layer(backbone: FakeBackbone) -> None:
    stage = bound(backbone, layer=0, keep=0.5)  # layers: mamba, attention, mlp, decoder -> nearest is 1
    src = backbone.layers[1]
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert torch.equal(getattr(stage, name).weight, getattr(src.attn, name).weight)
    assert torch.equal(stage.q_proj.bias, src.attn.q_proj.bias)
    assert torch.equal(stage.norm.weight, src.norm.weight)
    assert stage.norm.eps == src.norm.eps
    assert float(stage.alpha.detach()) == 0.0
    assert stage.alpha.requires_grad
    stage3 = bound(backbone, layer=3, keep=0.5)
    assert torch.equal(stage3.k_proj.weight, backbone.layers[3].attn.k_proj.weight)
    # copies, not shared tensors
    assert stage.q_proj.weight.data_ptr() != src.attn.q_proj.weight.data_ptr()


def test_gradients_reach_alpha_and_projections(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    stage = bound(backbone, layer=1, keep=0.5)
    with torch.no_grad():
        stage.alpha.fill_(0.5)
    out, _ = stage(hidden, state, backbone)
    out.pow(2).sum().backward()
    for name, p in stage.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    names = {n for n, _ in stage.named_parameters()}
    assert names == {
        "alpha",
        "norm.weight",
        "q_proj.weight",
        "q_proj.bias",
        "k_proj.weight",
        "k_proj.bias",
        "v_proj.weight",
        "v_proj.bias",
        "o_proj.weight",
    }


def test_alpha_gets_gradient_at_zero(hidden: Tensor, state: SequenceState, backbone: FakeBackbone) -> None:
    """At alpha = 0 the output equals dropping, but d/d alpha = CrossAttn(...) is not zero: TransV can learn."""
    stage = bound(backbone, layer=1, keep=0.5)
    out, _ = stage(hidden, state, backbone)
    out.sum().backward()
    assert stage.alpha.grad is not None and float(stage.alpha.grad.abs()) > 0


def test_segments_without_instruction_or_dropped_tokens(backbone: FakeBackbone) -> None:
    state = make_state([[(2, 6, 0, 2), (1, 5, 3, 0)], [(3, 0, 2, 0)], [(1, 3, 2, 1)]])
    hidden = torch.randn(state.batch_size, state.length, 16, dtype=torch.float64) * state.mask[..., None]
    stage = bound(backbone, layer=2, keep=0.5)
    with torch.no_grad():
        stage.alpha.fill_(2.0)
    out, new = stage(hidden, state, backbone)
    assert torch.isfinite(out).all()
    kept = kept_vision(state, 0.5, None)
    ref = naive_drop(naive_transfer(hidden, state, kept, stage), state, kept)
    torch.testing.assert_close(out, ref["hidden"], rtol=1e-10, atol=1e-10)
    # the text-only sample and the sample without instruction tokens are untouched
    plain = naive_drop(hidden, state, kept)["hidden"]
    assert torch.equal(out[1], plain[1])
    first = new.segment[0] == 0
    assert torch.equal(out[0][first], plain[0][first])


def test_bind_errors_name_the_stage(backbone: FakeBackbone) -> None:
    with pytest.raises(ValueError, match=r"TransV\(layer=2, keep=0.5, selector=attention\).*attention layer"):
        TransV(2, 0.5, "attention").bind(backbone)
    with pytest.raises(ValueError, match=r"TransV\(layer=1.*num_heads=8 does not match"):
        TransV(1, 0.5, num_heads=8).bind(backbone)
    no_attn = FakeBackbone(kinds=("mamba", "mlp"))
    with pytest.raises(ValueError, match=r"TransV\(layer=1.*no attention layer"):
        TransV(1, 0.5).bind(no_attn)
    TransV(1, 0.5, init_from_attention=False, num_heads=4).bind(no_attn)
    with pytest.raises(RuntimeError, match="call bind"):
        state = make_state([[(1, 4, 1, 0)]])
        TransV(1, 0.5)(torch.zeros(1, state.length, 16), state, backbone)
