"""Mixing matrices per head, their shares and the head classification rule."""

from __future__ import annotations

import torch

from lightning_viper.analysis.maps import ClassRule, LayerStats, MapRecorder, layer_weights
from lightning_viper.analysis.ssd_form import ssd_quadratic
from lightning_viper.sequence import TokenKind

from .conftest import ROWS, hidden_for, hybrid, make_state


def test_attention_rows_match_the_backbones_attention_scores() -> None:
    backbone = hybrid()
    state = make_state([[(2, 12, 5, 3)], [(1, 9, 4, 2)]])
    hidden = hidden_for(state)
    with torch.no_grad():
        h1 = backbone.run_layer(0, hidden, state, None)  # the input of attention layer 1
        w = layer_weights(backbone.attention_module(1), backbone.attention_norm(1)(h1), state, slice(0, state.length))
        instruction = state.kind == TokenKind.INSTRUCTION
        ref = backbone.attention_scores(1, h1, state, queries=instruction)  # (B, T), head and query averaged
    assert w.shape == (2, 4, state.length, state.length)
    rows = w.sum(-1)[:, 0]
    torch.testing.assert_close(rows[state.mask], torch.ones(int(state.mask.sum())))
    mean = (w.mean(1) * instruction[:, :, None]).sum(1) / instruction.sum(1, keepdim=True)
    torch.testing.assert_close(mean, ref, rtol=1e-5, atol=1e-6)


def test_mamba_matrix_applied_to_x_is_the_layer() -> None:
    backbone = hybrid()
    mixer = backbone.layers[0].mixer
    state = make_state(ROWS)
    x = hidden_for(state)
    with torch.no_grad():
        w = layer_weights(mixer, x, state, slice(0, state.length))  # (B, H, T, T)
        inp = mixer.ssd_inputs(x, state.mask, state.segment)
        y = torch.einsum("bhij,bjhp->bihp", w, inp.x) + inp.x * inp.D.view(1, 1, -1, 1)
    torch.testing.assert_close(y, ssd_quadratic(inp, state.segment))
    assert w[:, :, 0, 1:].abs().max() == 0  # causal


def test_the_rule() -> None:
    rule = ClassRule(window=2, local_mass=0.5, sparse_fraction=0.1)
    assert rule.classify(0.9, 0.05) == "local"
    assert rule.classify(0.1, 0.05) == "sparse"
    assert rule.classify(0.1, 0.6) == "global"


def test_local_sparse_and_global_heads_on_hand_made_matrices() -> None:
    state = make_state([[(1, 30, 5, 4)]])  # 40 tokens, text queries at 31..39
    t = state.length
    allowed = torch.ones(t, t).tril()
    local = torch.eye(t) + torch.diag(torch.ones(t - 1), -1)  # itself and the previous token
    sparse = torch.zeros(t, t)
    sparse[:, 0] = 1.0  # everything on the first token
    uniform = allowed / allowed.sum(-1, keepdim=True)
    w = torch.stack([local, sparse, uniform])[None]  # (1, 3, T, T)
    stats = LayerStats("mamba", 3)
    stats.add(w, state, slice(0, t), window=2)
    out = stats.summary(0, ClassRule(window=2))
    assert [h["class"] for h in out["heads"]] == ["local", "sparse", "global"]
    # uniform head: instruction query i (columns 31..35) sees keys 0..i, 30 of them vision (1..30)
    expected = sum(30 / (i + 1) for i in range(31, 36)) / 5
    assert abs(out["heads"][2]["instruction_to_vision"] - expected) < 1e-6
    assert out["heads"][1]["instruction_to_vision"] == 0.0  # the first token is text


def test_recorder_runs_every_layer_normally_and_sees_every_text_query() -> None:
    backbone = hybrid()
    state = make_state(ROWS)
    hidden = hidden_for(state)
    recorder = MapRecorder(backbone.layer_kinds, window=4)
    layers = [i for i, k in enumerate(backbone.layer_kinds) if k != "mlp"]
    with torch.no_grad():
        ref = backbone(hidden, state).hidden
        got = backbone(hidden, state, mixers={i: recorder for i in layers}).hidden
    torch.testing.assert_close(got, ref)
    text = int(((state.kind == TokenKind.INSTRUCTION) | (state.kind == TokenKind.RESPONSE)).sum())
    for i in layers:
        summary = recorder.stats[i].summary(i, ClassRule())
        assert recorder.stats[i].queries == text
        for query in ("instruction", "response"):
            assert abs(sum(summary["shares"][query].values()) - 1.0) < 1e-5
