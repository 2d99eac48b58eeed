"""Qwen2Backbone against transformers' Qwen2ForCausalLM on the same tiny random weights."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.backbones.qwen2 import Qwen2Backbone
from lightning_viper.backbones.qwen2_loading import load_qwen2
from lightning_viper.backbones.qwen2_presets import qwen2_5_7b, tiny_qwen2
from tests.backbones.conftest import layout_state, place_tokens

VOCAB = 96


def hf_tiny(tie: bool = False) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1000.0,
        tie_word_embeddings=tie,
        rms_norm_eps=1e-6,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # q/k/v biases start at zero: make them matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def hf_logits(model: Qwen2ForCausalLM, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]  # (T, V)


def our_logits(model: Qwen2Backbone, ids: torch.Tensor, state_rows: list[list[int]]) -> torch.Tensor:
    state = layout_state(state_rows, length=ids.shape[1])
    with torch.no_grad():
        out = model(model.embed(ids), state)
        return model.logits(out.hidden)  # (B, T, V)


@pytest.fixture(scope="module")
def hf_model() -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    return hf_tiny()


@pytest.mark.parametrize("sharded", [False, True])
def test_single_sequence_matches_transformers(
    hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str], sharded: bool
) -> None:
    path = tmp_checkpoint(hf_model, max_shard_size="20KB" if sharded else None)
    shards = [p for p in os.listdir(path) if p.endswith(".safetensors")]
    assert len(shards) > 1 if sharded else len(shards) == 1
    model = load_qwen2(path).eval()
    ids = torch.randint(0, VOCAB, (1, 11))
    got = our_logits(model, ids, [[11]])[0]
    torch.testing.assert_close(got, hf_logits(hf_model, ids[0].tolist()), atol=1e-5, rtol=1e-4)


def test_tied_embeddings_match_transformers(tmp_checkpoint: Callable[..., str]) -> None:
    torch.manual_seed(2)
    hf = hf_tiny(tie=True)
    model = load_qwen2(tmp_checkpoint(hf)).eval()
    assert model.lm_head is None
    ids = torch.randint(0, VOCAB, (1, 7))
    torch.testing.assert_close(our_logits(model, ids, [[7]])[0], hf_logits(hf, ids[0].tolist()), atol=1e-5, rtol=1e-4)


def test_left_padded_batch_matches_unpadded_rows(
    hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str]
) -> None:
    model = load_qwen2(tmp_checkpoint(hf_model)).eval()
    seqs = [torch.randint(0, VOCAB, (n,)).tolist() for n in (9, 4, 6)]
    state = layout_state([[len(s)] for s in seqs])
    ids = place_tokens([[s] for s in seqs], state)
    got = our_logits(model, ids, [[len(s)] for s in seqs])
    for row, seq in enumerate(seqs):
        want = hf_logits(hf_model, seq)
        torch.testing.assert_close(got[row, -len(seq) :], want, atol=1e-5, rtol=1e-4)


def test_packed_segments_match_separate_runs(hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str]) -> None:
    model = load_qwen2(tmp_checkpoint(hf_model)).eval()
    rows = [[5, 3, 4], [6]]
    seqs = [[torch.randint(0, VOCAB, (n,)).tolist() for n in r] for r in rows]
    state = layout_state(rows)
    got = our_logits(model, place_tokens(seqs, state), rows)
    for row, segs in enumerate(seqs):
        end = state.length
        for seg in reversed(segs):
            torch.testing.assert_close(got[row, end - len(seg) : end], hf_logits(hf_model, seg), atol=1e-5, rtol=1e-4)
            end -= len(seg)


def test_bfloat16_load_casts_weights(hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str]) -> None:
    model = load_qwen2(tmp_checkpoint(hf_model), dtype="bfloat16", prefill_chunk=4)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.prefill_chunk == 4


def test_missing_path_names_it(tmp_path: object) -> None:
    missing = f"{tmp_path}/no_such_qwen"
    with pytest.raises(CheckpointError, match="no_such_qwen"):
        load_qwen2(missing)


def test_unknown_override_is_rejected(hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str]) -> None:
    # shapes come from config.json only: the loader's signature has no shape options
    with pytest.raises(TypeError, match="hidden_size"):
        load_qwen2(tmp_checkpoint(hf_model), hidden_size=8)  # type: ignore[call-arg]


def test_mismatched_checkpoint_is_rejected(hf_model: Qwen2ForCausalLM, tmp_checkpoint: Callable[..., str]) -> None:
    path = tmp_checkpoint(hf_model)
    cfg = json.loads((Path(path) / "config.json").read_text())
    cfg["num_hidden_layers"] = 2
    (Path(path) / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_qwen2(path)


def test_7b_preset_parameter_count_matches_transformers() -> None:
    with torch.device("meta"):
        ours = qwen2_5_7b()
        config = Qwen2Config(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rope_theta=1e6,
            tie_word_embeddings=False,
        )
        theirs = Qwen2ForCausalLM(config)
    assert ours.param_count() == sum(p.numel() for p in theirs.parameters())
    assert set(ours.state_dict()) == {k.removeprefix("model.") for k in theirs.state_dict()}
    assert ours.num_layers == 28 and ours.head_dim == 128


def test_gradient_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(3)
    model = tiny_qwen2(num_layers=2)
    state = layout_state([[6], [4]])
    ids = torch.randint(0, 512, (2, 6))
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model.train()
        out = model(model.embed(ids), state)
        model.logits(out.hidden)[state.mask].logsumexp(-1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
