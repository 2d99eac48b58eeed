from __future__ import annotations

import torch

from lightning_viper.data.collate import VideoCollator
from lightning_viper.data.sample import Sample
from lightning_viper.text.templates import PlainTemplate


def make_sample(key: str, frames: int, answer: str, skipped: int = 0) -> Sample:
    meta = {"key": key, "task": "qa", "num_frames": frames}
    pixels = torch.full((frames, 3, 8, 8), frames, dtype=torch.uint8)
    return Sample(key, pixels, torch.arange(frames).float(), "What colour was the star?", answer, meta, skipped)


def test_collate_packs_frames_and_masks_labels(demo_tokenizer) -> None:
    collator = VideoCollator(demo_tokenizer, PlainTemplate())
    samples = [make_sample("a", 3, "red", skipped=2), make_sample("b", 5, "from 10 to 12 seconds", skipped=1)]
    batch = collator(samples)
    assert batch.frames.shape == (8, 3, 8, 8)
    assert batch.frames_per_sample.tolist() == [3, 5]
    assert torch.equal(batch.frames[:3], samples[0].frames) and torch.equal(batch.frames[3:], samples[1].frames)
    assert batch.skipped == 3
    assert [m["key"] for m in batch.meta] == ["a", "b"]
    pad, eos = demo_tokenizer.pad_token_id, demo_tokenizer.eos_token_id
    video = demo_tokenizer.convert_tokens_to_ids("<video>")
    for b, sample in enumerate(samples):
        prompt_ids = demo_tokenizer(PlainTemplate().prompt(sample.prompt_text), add_special_tokens=False)["input_ids"]
        answer_ids = demo_tokenizer(sample.answer, add_special_tokens=False)["input_ids"] + [eos]
        n_prompt, n = len(prompt_ids), len(prompt_ids) + len(answer_ids)
        assert batch.prompt_lengths[b] == n_prompt
        assert batch.input_ids[b, :n].tolist() == prompt_ids + answer_ids
        assert (batch.input_ids[b, :n] == video).sum() == 1
        assert batch.attention_mask[b].tolist() == [True] * n + [False] * (batch.input_ids.shape[1] - n)
        assert (batch.input_ids[b, n:] == pad).all()
        # labels: -100 on the prompt and padding, the answer (+ eos) elsewhere
        assert (batch.labels[b, :n_prompt] == -100).all() and (batch.labels[b, n:] == -100).all()
        assert batch.labels[b, n_prompt:n].tolist() == answer_ids


def test_answer_cut_keeps_eos(demo_tokenizer) -> None:
    collator = VideoCollator(demo_tokenizer, PlainTemplate(), max_answer_tokens=3)
    _, target = collator.encode("q", "one two three four five")
    assert len(target) == 3 and target[-1] == demo_tokenizer.eos_token_id
