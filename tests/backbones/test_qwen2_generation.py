"""Qwen2Backbone generation cache, chunked prefill, compression between layers, attention scores."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from transformers import Qwen2Config, Qwen2ForCausalLM

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.qwen2 import Qwen2Backbone
from lightning_viper.backbones.qwen2_loading import load_qwen2
from lightning_viper.backbones.qwen2_presets import tiny_qwen2
from lightning_viper.compression.base import CompressionStage
from lightning_viper.sequence import SequenceState, compact
from tests.backbones.conftest import layout_state, place_tokens

VOCAB = 96


class DropPositions(CompressionStage):
    """Test stage: drop the tokens at fixed within-segment positions."""

    def __init__(self, layer: int, positions: list[int]) -> None:
        super().__init__(layer, keep=1.0)
        self.positions = torch.tensor(positions)

    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        return compact(hidden, state, ~torch.isin(state.position, self.positions))


def greedy(model: Qwen2Backbone, seqs: list[list[int]], steps: int, stages: tuple = ()) -> list[list[int]]:
    state = layout_state([[len(s)] for s in seqs])
    ids = place_tokens([[s] for s in seqs], state)
    cache = model.new_cache(len(seqs))
    with torch.no_grad():
        out = model(model.embed(ids), state, stages=stages, cache=cache)
        tok = model.logits(out.hidden[:, -1]).argmax(-1)  # (B,)
        tokens = [tok]
        for _ in range(steps - 1):
            tok = model.logits(model.decode(model.embed(tok[:, None]), cache)[:, -1]).argmax(-1)
            tokens.append(tok)
    return torch.stack(tokens, 1).tolist()


@pytest.fixture(scope="module")
def hf_model() -> Qwen2ForCausalLM:
    torch.manual_seed(4)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        rope_theta=500.0,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("chunk", [None, 3])
def test_greedy_generation_matches_transformers(
    hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str], chunk: int | None
) -> None:
    model = load_qwen2(tmp_checkpoint(hf_model), prefill_chunk=chunk).eval()
    seqs = [torch.randint(0, VOCAB, (n,)).tolist() for n in (7, 3, 5)]
    steps = 20  # past the cache's first growth (16)
    got = greedy(model, seqs, steps)
    for row, seq in enumerate(seqs):
        ids = torch.tensor([seq])
        want = hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),  # explicit: a token equal to pad_token_id is not padding
            max_new_tokens=steps,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
        assert got[row] == want[0, len(seq) :].tolist()


def test_chunked_prefill_equals_unchunked() -> None:
    torch.manual_seed(5)
    model = tiny_qwen2(num_layers=2).eval()
    rows = [[4, 5, 3], [9], [2]]
    state = layout_state(rows)
    ids = torch.randint(0, 512, (3, state.length))
    with torch.no_grad():
        want = model(model.embed(ids), state).hidden
        for chunk in (1, 4, 5, 100):
            model.prefill_chunk = chunk
            got = model(model.embed(ids), state).hidden
            torch.testing.assert_close(got[state.mask], want[state.mask], atol=1e-5, rtol=1e-5)


def test_decode_after_compression_matches_full_recompute() -> None:
    """Compression makes layer caches differ in length and positions; each decode step must equal
    the last column of a fresh forward over prompt + generated tokens with the same stage."""
    torch.manual_seed(6)
    model = tiny_qwen2(num_layers=3).eval()
    stages = (DropPositions(layer=1, positions=[1, 2, 4]), DropPositions(layer=2, positions=[0]))
    seqs = [torch.randint(0, 512, (n,)).tolist() for n in (8, 6)]
    got = greedy(model, seqs, steps=4, stages=stages)
    for step in range(4):
        full = [s + g[:step] for s, g in zip(seqs, got, strict=True)]
        state = layout_state([[len(s)] for s in full])
        with torch.no_grad():
            out = model(model.embed(place_tokens([[s] for s in full], state)), state, stages=stages)
        assert model.logits(out.hidden[:, -1]).argmax(-1).tolist() == [g[step] for g in got]
    cache = model.new_cache(2)
    state = layout_state([[len(s)] for s in seqs])
    with torch.no_grad():
        model(model.embed(place_tokens([[s] for s in seqs], state)), state, stages=stages, cache=cache)
    assert [c.size for c in cache.layers] == [8, 5, 4]  # 8 - 3 dropped, then 1 more (renumbered positions)


def test_decode_hidden_matches_recompute_numerically() -> None:
    torch.manual_seed(7)
    model = tiny_qwen2(num_layers=2).eval()
    stages = (DropPositions(layer=1, positions=[0, 3]),)
    seq, nxt = torch.randint(0, 512, (6,)).tolist(), 17
    state = layout_state([[6]])
    cache = model.new_cache(1)
    with torch.no_grad():
        model(model.embed(torch.tensor([seq])), state, stages=stages, cache=cache)
        got = model.decode(model.embed(torch.tensor([[nxt]])), cache)[0, 0]
        state7 = layout_state([[7]])
        want = model(model.embed(torch.tensor([[*seq, nxt]])), state7, stages=stages).hidden[0, -1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def naive_rope(x: Tensor, pos: int, theta: float) -> Tensor:
    """Rotate pairs (i, i + hd/2) by pos * theta^(-2i/hd)."""
    half = x.shape[-1] // 2
    out = x.clone()
    for i in range(half):
        angle = pos * theta ** (-2 * i / x.shape[-1])
        c, s = math.cos(angle), math.sin(angle)
        out[..., i] = x[..., i] * c - x[..., i + half] * s
        out[..., i + half] = x[..., i + half] * c + x[..., i] * s
    return out


def test_attention_scores_match_naive() -> None:
    torch.manual_seed(8)
    model = tiny_qwen2(num_layers=2).eval()
    rows = [[5, 6], [7], [3]]
    state = layout_state(rows, instruction_tail=2)
    hidden = torch.randn(3, state.length, model.hidden_size)
    layer = 1
    got = model.attention_scores(layer, hidden, state)
    block = model.layers[layer]
    attn = block.self_attn
    hq, hkv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim
    want = torch.zeros(3, state.length, dtype=torch.float64)
    for seg in range(state.num_segments):
        row = int(state.segment_row[seg])
        cols = [c for c in range(state.length) if int(state.segment[row, c]) == seg]
        qcol = max(c for c in cols if int(state.kind[row, c]) == 3)
        with torch.no_grad():
            x = block.input_layernorm(hidden[row])  # (T, D)
            q = attn.q_proj(x[qcol]).view(hq, hd)
            keys = [c for c in cols if c <= qcol]
            k = {c: attn.k_proj(x[c]).view(hkv, hd) for c in keys}
        for h in range(hq):
            qh = naive_rope(q[h].double(), int(state.position[row, qcol]), attn.rope_theta)
            logits = [
                float(qh @ naive_rope(k[c][h // (hq // hkv)].double(), int(state.position[row, c]), attn.rope_theta))
                / math.sqrt(hd)
                for c in keys
            ]
            top = max(logits)
            total = sum(math.exp(v - top) for v in logits)
            for c, v in zip(keys, logits, strict=True):
                want[row, c] += math.exp(v - top) / total / hq
    assert got.dtype == torch.float32 and got.shape == (3, state.length)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-4)


def test_attention_module_contract() -> None:
    model = tiny_qwen2()
    mod = model.attention_module(2)
    assert all(hasattr(mod, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert (mod.num_heads, mod.num_kv_heads, mod.head_dim) == (4, 2, 16)
    assert model.layers[2].norm is model.layers[2].input_layernorm
    assert model.layer_kinds == ("decoder",) * 4 and model.is_attention_layer(0)
