"""lightning_viper.inference: answers and log-likelihoods on real mp4 files, checked against naive
re-prefill loops (no cache, one full pass per token) and against VideoLM's own training loss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_viper.inference import Inference, InferenceError, cut_at, load_inference
from tests.eval.videos import write_videos
from tests.fixtures_demo import Tiny

UNIFORM = json.dumps([{"class_path": "lightning_viper.compression.TokenDrop", "init_args": {"layer": 1, "keep": 0.25}}])


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return write_videos(tmp_path_factory.mktemp("videos"), 2)


def _load(tiny: Tiny, compression: str | None = None) -> Inference:
    return load_inference(tiny.recipe, str(tiny.checkpoint), ["--config", str(tiny.overlay)], compression)


def _last_logits(inf: Inference, frames: torch.Tensor, question: str, extra: list[int]) -> torch.Tensor:
    """Logits after the prompt + ``extra`` tokens, from a fresh full prefill (no cache). (V,)"""
    batch = inf.batch(frames, question, extra)
    batch = dataclasses.replace(batch, prompt_lengths=batch.attention_mask.sum(1))  # all of it is prompt
    hidden, state, _ = inf.model.embed_batch(batch, prompt_only=True)
    out = inf.model.backbone(hidden, state, stages=inf.model.stages())
    return inf.model.backbone.logits(out.hidden[0, -1]).float()


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, UNIFORM], ids=["none", "token_drop"])
def test_ask_matches_a_naive_greedy_loop(tiny: Tiny, videos: list[dict], compression: str | None) -> None:
    inf = _load(tiny, compression)
    doc = videos[0]
    answer = inf.ask(doc["video"], doc["question"], max_new_tokens=5)
    assert answer.frames == 8  # 8 s at the recipe's 1 fps
    assert answer.vision_tokens == 8 * 4  # ToMe keeps 4 tokens per frame
    assert answer.vision_tokens_final == (8 if compression else 32)
    assert [(s["before"], s["after"]) for s in answer.stages] == ([(32, 8)] if compression else [])
    assert 0 < answer.prefill_ms <= answer.total_ms and answer.decode_ms < answer.total_ms

    frames = inf.decode(doc["video"]).frames
    eos, tokens = inf.tokenizer.eos_token_id, []
    with torch.no_grad():
        for _ in range(5):
            nxt = int(_last_logits(inf, frames, doc["question"], tokens).argmax())
            if nxt == eos:
                break
            tokens.append(nxt)
    assert answer.text == inf.tokenizer.decode(tokens, skip_special_tokens=True).strip()


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, UNIFORM], ids=["none", "token_drop"])
def test_loglikelihood_matches_per_token_prefills_and_the_training_loss(
    tiny: Tiny, videos: list[dict], compression: str | None
) -> None:
    inf = _load(tiny, compression)
    doc = videos[1]
    frames = inf.decode(doc["video"]).frames
    continuation = " B. green"
    cont = inf.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    assert len(cont) > 1
    logprob, greedy = inf.loglikelihood(frames, doc["question"], continuation)

    with torch.no_grad():
        steps = [F.log_softmax(_last_logits(inf, frames, doc["question"], cont[:k]), -1) for k in range(len(cont))]
        loss, _ = inf.model(inf.batch(frames, doc["question"], cont))  # mean cross-entropy on the labels
    naive = sum(float(s[t]) for s, t in zip(steps, cont, strict=True))
    assert logprob == pytest.approx(naive, rel=1e-4, abs=1e-4)
    assert logprob == pytest.approx(-float(loss) * len(cont), rel=1e-4, abs=1e-4)
    assert greedy == all(int(s.argmax()) == t for s, t in zip(steps, cont, strict=True))


@pytest.mark.slow
def test_clear_errors_for_bad_inputs(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match=r"does not exist: pass a .ckpt file"):
        load_inference(tiny.recipe, str(tmp_path / "nope.ckpt"), ["--config", str(tiny.overlay)])
    with pytest.raises(InferenceError, match="neither a file nor a JSON list"):
        load_inference(tiny.recipe, str(tiny.checkpoint), ["--config", str(tiny.overlay)], "[{oops")
    with pytest.raises(InferenceError, match=r"recipe .* does not exist"):
        load_inference(tmp_path / "none.yaml", str(tiny.checkpoint))
    not_ckpt = tmp_path / "notes.ckpt"
    not_ckpt.write_text("not a checkpoint")
    with pytest.raises(InferenceError, match="not a readable PyTorch checkpoint"):
        load_inference(tiny.recipe, str(not_ckpt), ["--config", str(tiny.overlay)])

    inf = _load(tiny)
    with pytest.raises(InferenceError, match="does not exist: pass the path of a video file"):
        inf.ask(tmp_path / "missing.mp4", "What colour was the star?")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(InferenceError, match=r"cannot read video .*Pass a playable video file"):
        inf.ask(broken, "What colour was the star?")


def test_cut_at_stops_at_the_first_stop_string() -> None:
    assert cut_at("A. red\nQuestion: next", ["\n", "Question:"]) == "A. red"
    assert cut_at(" B ", []) == "B"
    assert cut_at("C</s>D", ["", "</s>"]) == "C"
