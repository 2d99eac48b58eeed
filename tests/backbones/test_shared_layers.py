"""The layers both backbone families share: RMSNorm, the KV cache, attention scores, the typed view."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.cache import KVCache
from lightning_viper.backbones.nemotron_h_presets import tiny_hybrid
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.backbones.qwen2_presets import tiny_qwen2
from lightning_viper.sequence import TokenKind
from tests.backbones.conftest import layout_state


@pytest.mark.parametrize("weight_in_float32", [False, True])
def test_rms_norm_matches_both_checkpoint_conventions(weight_in_float32: bool) -> None:
    norm = RMSNorm(8, eps=1e-5, weight_in_float32=weight_in_float32).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = torch.randn(3, 5, 8).to(torch.bfloat16)
    xf = x.float()
    normed = xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)
    if weight_in_float32:  # Nemotron-H: scale in float32, then cast
        want = (norm.weight.float() * normed).to(torch.bfloat16)
    else:  # Qwen2: cast, then scale in the weight's dtype
        want = norm.weight * normed.to(torch.bfloat16)
    assert torch.equal(norm(x), want)
    double = torch.randn(2, 8, dtype=torch.float64)  # float64 stays float64
    ref = double / torch.sqrt(double.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(RMSNorm(8, 1e-5).double()(double), ref, rtol=1e-12, atol=1e-12)


def test_kv_cache_grows_geometrically_and_keeps_every_token() -> None:
    cache = KVCache()
    b, h, d = 2, 3, 4
    k0, v0 = torch.randn(b, h, 5, d), torch.randn(b, h, 5, d)
    mask0 = torch.tensor([[False, True, True, True, True], [True] * 5])
    seg0 = torch.where(mask0, 0, -1)
    cache.append(k0, v0, mask0, seg0, torch.arange(5).expand(b, 5))
    keys, values, capacities = [k0], [v0], set()
    for _ in range(100):
        k, v = torch.randn(b, h, 1, d), torch.randn(b, h, 1, d)
        one = torch.ones(b, 1, dtype=torch.bool)
        out_k, out_v, out_mask, out_seg = cache.append(k, v, one, torch.zeros(b, 1, dtype=torch.long))
        keys.append(k)
        values.append(v)
        assert cache.k is not None
        capacities.add(cache.k.shape[2])
    assert torch.equal(out_k, torch.cat(keys, 2)) and torch.equal(out_v, torch.cat(values, 2))
    assert torch.equal(out_mask, torch.cat([mask0, torch.ones(b, 100, dtype=torch.bool)], 1))
    assert torch.equal(out_seg[:, :5], seg0) and bool((out_seg[:, 5:] == 0).all())
    assert cache.length == 105 and len(capacities) <= 5  # reallocated a few times, not per token
    assert cache.next_position is not None and cache.next_position.tolist() == [5, 5]


def test_kv_cache_concatenates_while_gradients_flow() -> None:
    cache = KVCache()
    k = torch.randn(1, 1, 3, 2, requires_grad=True)
    mask, seg = torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.long)
    cache.append(k, k * 2, mask, seg)
    out_k, out_v, _, _ = cache.append(k * 3, k * 4, mask, seg)
    (out_k.sum() + out_v.sum()).backward()
    assert k.grad is not None and torch.equal(k.grad, torch.full_like(k, 10.0))


@pytest.mark.parametrize("build", [tiny_qwen2, tiny_hybrid])
def test_chunked_prefill_gives_same_outputs_and_gradients(build: Callable[[], Backbone]) -> None:
    torch.manual_seed(3)
    model = build()
    state = layout_state([[9, 4], [11]])
    hidden = torch.randn(2, state.length, model.hidden_size)
    grads, outs = [], []
    for chunk in (None, 4):
        model.zero_grad()
        model.prefill_chunk = chunk
        out = model(hidden, state).hidden
        out[state.mask].square().sum().backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("build", [tiny_qwen2, tiny_hybrid])
@torch.no_grad()
def test_scores_of_many_queries_average_single_query_scores(build: Callable[[], Backbone]) -> None:
    """``queries=mask`` equals the average of one call per query (each made the segment's last)."""
    torch.manual_seed(4)
    model = build().eval()
    state = layout_state([[9, 8], [12]], instruction_tail=3, vision=3)
    layer = model.attention_layers[-1]
    hidden = torch.randn(2, state.length, model.hidden_size)
    instr = (state.kind == int(TokenKind.INSTRUCTION)) & state.mask
    got = model.attention_scores(layer, hidden, state, queries=instr)
    want = torch.zeros_like(got)
    for r in range(3):  # every segment here has 3 instruction tokens, each row's last segment ends the row
        for s in range(state.num_segments):
            row = int(state.segment_row[s])
            cols = [c for c in range(state.length) if instr[row, c] and int(state.segment[row, c]) == s]
            single = torch.zeros_like(instr)
            single[row, cols[r]] = True
            want[row] += model.attention_scores(layer, hidden, state, queries=single)[row] / 3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    default = model.attention_scores(layer, hidden, state)
    last = torch.zeros_like(instr)
    last[state.segment_row, state.query_index()] = True
    assert torch.equal(default, model.attention_scores(layer, hidden, state, queries=last))


@pytest.mark.parametrize("build", [tiny_qwen2, tiny_hybrid])
def test_attention_view_names_the_layer_parts(build: Callable[[], Backbone]) -> None:
    model = build()
    layer = model.attention_layers[0]
    view = model.attention_layer(layer)
    attn = model.attention_module(layer)
    assert (view.num_heads, view.num_kv_heads, view.head_dim) == (attn.num_heads, attn.num_kv_heads, attn.head_dim)
    assert view.norm_weight is model.attention_norm(layer).weight and isinstance(view.eps, float)
    assert view.projections()["k_proj"] is attn.k_proj
    if model.num_layers > len(model.attention_layers):
        other = next(i for i in range(model.num_layers) if not model.is_attention_layer(i))
        with pytest.raises(ValueError, match=rf"layer {other} is .*attention layers of this backbone"):
            model.attention_layer(other)
