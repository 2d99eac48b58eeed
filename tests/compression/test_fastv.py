"""FastVDrop against attention written out per query and head from the hybrid backbone's weights."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_viper.backbones.base import Backbone
from lightning_viper.compression import FastVDrop, validate_schedule
from lightning_viper.sequence import SequenceState, TokenKind

from .conftest import FakeBackbone, make_state
from .reference import kept_count, naive_drop, segment_columns


def naive_scores(backbone: Backbone, layer: int, hidden: torch.Tensor, state: SequenceState) -> dict[int, float]:
    """(row, col) -> attention received, averaged over heads and over the segment's instruction tokens.

    The hybrid's attention layers have no positional encoding: logits are q_i . k_j / sqrt(hd)."""
    attn = backbone.attention_module(layer)
    norm = backbone.layers[layer].norm
    hq, hkv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim
    out: dict[int, float] = {}
    for _, (r, cols) in segment_columns(state).items():
        x = norm(hidden[r, cols])  # (n, D)
        q, k = attn.q_proj(x), attn.k_proj(x)
        instr = [i for i, c in enumerate(cols) if int(state.kind[r, c]) == TokenKind.INSTRUCTION]
        for i in instr:
            for h in range(hq):
                g = h // (hq // hkv)
                logits = [
                    float(q[i, h * hd : (h + 1) * hd] @ k[j, g * hd : (g + 1) * hd]) / math.sqrt(hd)
                    for j in range(i + 1)
                ]
                z = sum(math.exp(v - max(logits)) for v in logits)
                for j in range(i + 1):
                    key = r * 10_000 + cols[j]
                    out[key] = out.get(key, 0.0) + math.exp(logits[j] - max(logits)) / z / hq / len(instr)
    return out


@pytest.mark.parametrize("keep", [0.2, 0.5])
@torch.no_grad()
def test_matches_naive_attention_from_all_instruction_tokens(keep: float) -> None:
    from lightning_viper.backbones.nemotron_h_presets import tiny_hybrid

    torch.manual_seed(0)
    backbone = tiny_hybrid().double().eval()
    state = make_state([[(2, 9, 4, 2)], [(1, 12, 1, 0)], [(3, 5, 3, 1), (2, 11, 2, 0)]])
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size, dtype=torch.float64)
    hidden = hidden * state.mask[..., None]
    stage = FastVDrop(2, keep)
    stage.bind(backbone)
    scores = naive_scores(backbone, 2, hidden, state)
    kept: dict[int, list[int]] = {}
    for s, (r, cols) in segment_columns(state).items():
        vis = [c for c in cols if int(state.kind[r, c]) == TokenKind.VISION]
        k = kept_count(keep, int(state.num_vision_orig[s]), len(vis))
        kept[s] = sorted(sorted(vis, key=lambda c: (-scores[r * 10_000 + c], c))[:k])
    out, new = stage(hidden, state, backbone)
    ref = naive_drop(hidden, state, kept)
    assert torch.equal(out, ref["hidden"])
    assert torch.equal(new.origin, ref["origin"])


def test_rejects_non_attention_layers() -> None:
    backbone = FakeBackbone()
    with pytest.raises(ValueError, match=r"FastVDrop\(layer=0, keep=0.5\).*attention layer"):
        FastVDrop(0, 0.5).bind(backbone)
    with pytest.raises(ValueError, match=r"FastVDrop\(layer=2, keep=0.5\).*attention"):
        validate_schedule([FastVDrop(2, 0.5)], backbone)


@torch.no_grad()
def test_one_instruction_token_equals_last_token_selection() -> None:
    """With one instruction token per segment, 'all text tokens' is the last one: same as TokenDrop."""
    from lightning_viper.backbones.qwen2_presets import tiny_qwen2
    from lightning_viper.compression import TokenDrop

    torch.manual_seed(0)
    backbone = tiny_qwen2().eval()  # rotary attention: the scores go through the backbone's own code
    state = make_state([[(2, 9, 1, 0)], [(1, 14, 1, 0)], [(3, 6, 1, 0), (2, 11, 1, 0)]])
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size) * state.mask[..., None]
    a, sa = FastVDrop(1, 0.4)(hidden, state, backbone)
    b, sb = TokenDrop(1, 0.4, "attention")(hidden, state, backbone)
    assert torch.equal(a, b) and torch.equal(sa.origin, sb.origin)
