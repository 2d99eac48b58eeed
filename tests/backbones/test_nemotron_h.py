"""NemotronHBackbone against transformers' NemotronHForCausalLM on the same weights (CPU, fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_h_loading import load_nemotron_h
from tests.backbones.test_nemotron_h_helpers import hf_model, packed_state, place

TOL = dict(rtol=1e-4, atol=2e-5)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, checkpoint dir) for the tiny config."""
    torch.set_num_threads(1)
    model = hf_model()
    path = tmp_path_factory.mktemp("nemotron") / "tiny"
    model.save_pretrained(path)
    return model, str(path)


def ours_logits(model: NemotronHBackbone, ids, state):
    with torch.no_grad():
        out = model(model.embed(ids), state)
        return model.logits(out.hidden)


def hf_logits(hf, tokens):
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0]


def test_single_sequence_matches_transformers(pair):
    hf, path = pair
    ours = load_nemotron_h(path, kernels="torch").eval()
    tokens = torch.randint(1, 97, (21,)).tolist()
    state = packed_state([[21]])
    torch.testing.assert_close(ours_logits(ours, place([tokens], state), state)[0], hf_logits(hf, tokens), **TOL)


def test_sharded_checkpoint_loads_the_same_weights(pair, tmp_path):
    hf, path = pair
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    a, b = load_nemotron_h(path), load_nemotron_h(str(tmp_path / "sharded"))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb)


def test_left_padded_batch_rows_match_unpadded_runs(pair):
    hf, path = pair
    ours = load_nemotron_h(path, kernels="torch").eval()
    lengths = [19, 6, 13]
    tokens = [torch.randint(1, 97, (n,)).tolist() for n in lengths]
    state = packed_state([[n] for n in lengths])
    logits = ours_logits(ours, place(tokens, state), state)
    for r, row in enumerate(tokens):
        torch.testing.assert_close(logits[r, state.mask[r]], hf_logits(hf, row), **TOL)


@pytest.mark.parametrize("prefill_chunk", [None, 5])
def test_packed_segments_match_separate_runs(pair, prefill_chunk):
    hf, path = pair
    ours = load_nemotron_h(path, kernels="torch", prefill_chunk=prefill_chunk).eval()
    rows = [[7, 11, 3], [9], [1, 10]]
    segs = [torch.randint(1, 97, (n,)).tolist() for r in rows for n in r]
    state = packed_state(rows)
    per_row, i = [], 0
    for r in rows:
        per_row.append([tok for seg in segs[i : i + len(r)] for tok in seg])
        i += len(r)
    logits = ours_logits(ours, place(per_row, state), state)
    for sid, seg_tokens in enumerate(segs):
        r = int(state.segment_row[sid])
        torch.testing.assert_close(logits[r, state.segment[r] == sid], hf_logits(hf, seg_tokens), **TOL)


def test_chunked_prefill_equals_unchunked(pair):
    _, path = pair
    whole = load_nemotron_h(path, kernels="torch").eval()
    chunked = load_nemotron_h(path, kernels="torch", prefill_chunk=4).eval()
    state = packed_state([[5, 17], [14]])
    ids = torch.randint(1, 97, state.mask.shape)
    torch.testing.assert_close(ours_logits(chunked, ids, state), ours_logits(whole, ids, state), **TOL)


def test_gradient_checkpointing_gives_the_same_grads(pair):
    _, path = pair
    grads = []
    for ckpt in (False, True):
        model = load_nemotron_h(path, kernels="torch", gradient_checkpointing=ckpt, prefill_chunk=6).train()
        state = packed_state([[4, 9], [12]])
        ids = torch.randint(1, 97, state.mask.shape, generator=torch.Generator().manual_seed(1))
        out = model(model.embed(ids), state)
        loss = model.logits(out.hidden)[state.mask].logsumexp(-1).mean()
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for key, g in grads[0].items():
        torch.testing.assert_close(grads[1][key], g, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("key_piece", [65_536, 5])  # 5: keys normed and projected in pieces of 5 tokens
def test_attention_scores_match_naive_softmax(pair, monkeypatch, key_piece):
    from lightning_viper.backbones import scores as scores_module

    monkeypatch.setattr(scores_module, "KEY_PIECE", key_piece)
    _, path = pair
    model = load_nemotron_h(path, kernels="torch").eval()
    state = packed_state([[6, 8], [10]])
    hidden = torch.randn(2, 14, 64)
    layer = model.layer_kinds.index("attention")
    with torch.no_grad():
        scores = model.attention_scores(layer, hidden, state)
    block = model.layers[layer]
    attn = block.mixer
    normed = block.norm(hidden)
    q = attn.q_proj(normed).view(2, 14, 4, 16)
    k = attn.k_proj(normed).view(2, 14, 2, 16)
    expected = torch.zeros(2, 14)
    qidx = state.query_index()
    for sid in range(state.num_segments):
        r, qc = int(state.segment_row[sid]), int(qidx[sid])
        cols = [c for c in range(14) if state.segment[r, c] == sid and c <= qc]
        for head in range(4):
            logits = torch.stack([(q[r, qc, head] * k[r, c, head // 2]).sum() / 4.0 for c in cols])
            expected[r, cols] += logits.softmax(0).detach() / 4
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert scores.dtype == torch.float32


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        load_nemotron_h(str(tmp_path / "nowhere"))


def test_unknown_config_key_is_refused(pair, tmp_path):
    _, path = pair
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((Path(path) / "config.json").read_text())
    config["rope_theta"] = 10000.0
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").symlink_to(Path(path) / "model.safetensors")
    with pytest.raises(CheckpointError, match="rope_theta"):
        load_nemotron_h(str(bad))


def test_tied_config_with_stored_head_matches_transformers(tmp_path):
    """transformers' NemotronH keeps (and saves) its own lm_head even with tie_word_embeddings."""
    hf = hf_model(seed=5, tie_word_embeddings=True, hybrid_override_pattern="M*-")
    hf.save_pretrained(tmp_path / "tied")
    ours = load_nemotron_h(str(tmp_path / "tied")).eval()
    tokens = torch.randint(1, 97, (9,)).tolist()
    state = packed_state([[9]])
    torch.testing.assert_close(ours_logits(ours, place([tokens], state), state)[0], hf_logits(hf, tokens), **TOL)


def test_built_model_ties_head_to_embeddings():
    model = NemotronHBackbone(pattern="M-*", tie_word_embeddings=True)
    assert model.lm_head.weight is model.embeddings.weight
