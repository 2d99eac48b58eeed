"""Collate decoded samples into a :class:`~lightning_viper.batch.VideoBatch`."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from lightning_viper.batch import VideoBatch
from lightning_viper.data.sample import Sample
from lightning_viper.text.templates import PromptTemplate
from lightning_viper.text.tokenizer import video_token_id


class VideoCollator:
    """Tokenize prompt + answer per sample and pack frames over the batch.

    ``input_ids`` = prompt tokens, then answer tokens ending with the tokenizer's eos id, right-padded
    with the pad id. ``labels`` = -100 on the prompt and padding. With ``max_answer_tokens`` the
    answer is cut to that many tokens (eos kept).
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate, max_answer_tokens: int | None = None
    ) -> None:
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs eos and pad tokens: load it with lightning_viper.text.load_tokenizer")
        self.tokenizer = tokenizer
        self.template = template
        self.max_answer_tokens = max_answer_tokens
        self.video_id = video_token_id(tokenizer)

    def encode(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        """Prompt ids (exactly one ``<video>``) and answer ids (ending with eos)."""
        prompt = self.tokenizer(self.template.prompt(question), add_special_tokens=False)["input_ids"]
        if prompt.count(self.video_id) != 1:
            raise ValueError(
                f"the prompt must hold exactly one <video> token, got {prompt.count(self.video_id)}: "
                f"check the template {type(self.template).__name__} and the question text"
            )
        target = self.tokenizer(self.template.answer(answer), add_special_tokens=False)["input_ids"]
        eos = int(self.tokenizer.eos_token_id)
        if not target or target[-1] != eos:
            target = [*target, eos]
        if self.max_answer_tokens is not None and len(target) > self.max_answer_tokens:
            target = [*target[: self.max_answer_tokens - 1], eos]
        return list(prompt), list(target)

    def __call__(self, samples: list[Sample]) -> VideoBatch:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        rows = [self.encode(s.prompt_text, s.answer) for s in samples]
        length = max(len(p) + len(a) for p, a in rows)
        bsz = len(samples)
        input_ids = torch.full((bsz, length), int(self.tokenizer.pad_token_id), dtype=torch.long)
        labels = torch.full((bsz, length), -100, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((bsz, length), dtype=torch.bool)  # (B, L)
        for b, (prompt, target) in enumerate(rows):
            n = len(prompt) + len(target)
            input_ids[b, :n] = torch.tensor(prompt + target)
            labels[b, len(prompt) : n] = torch.tensor(target)
            attention_mask[b, :n] = True
        # one sample (long videos): no copy; several: one packed copy (channels-last kept)
        frames = samples[0].frames if bsz == 1 else torch.cat([s.frames for s in samples])  # (F_total, 3, S, S)
        return VideoBatch(
            frames=frames,
            frames_per_sample=torch.tensor([s.frames.shape[0] for s in samples], dtype=torch.long),  # (B,)
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            prompt_lengths=torch.tensor([len(p) for p, _ in rows], dtype=torch.long),  # (B,)
            meta=[dict(s.meta) for s in samples],
            skipped=sum(s.skipped for s in samples),
        )
