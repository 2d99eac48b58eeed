"""Frames-to-first-token prefill as the benchmarks run it: ``VideoLM``'s own encode path and
:func:`~lightning_viper.generation.greedy_generate` (one token), on frames served from host memory.

Frames stay on the host (pinned) and travel to the device one micro-batch at a time
(``VideoLM.encode_video`` takes any :class:`~lightning_viper.encoders.batching.FrameSequence`);
encoder and projector run per micro-batch, so the (F, 729, 1152) patch features of the whole
video never exist at once. The only bench-side step is splicing one prompt around the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_viper.batch import VideoBatch
from lightning_viper.generation import greedy_generate
from lightning_viper.module import VideoLM
from lightning_viper.ops.profiling import Marks, region
from lightning_viper.sequence import SequenceState
from lightning_viper.splice import splice
from lightning_viper.text.tokenizer import video_token_id

PROMPT_WORDS = (
    "What",
    "happened",
    "in",
    "the",
    "video",
    "?",
    "Describe",
    "the",
    "objects",
    "and",
    "when",
    "they",
    "appear",
)


class FrameSource:
    """A stand-in for decoded video: ``pool`` random uint8 frames in (pinned) host memory,
    served in micro-batches (cycled; content does not change the cost)."""

    def __init__(self, image_size: int, pool: int, device: torch.device, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        frames = torch.randint(0, 256, (pool, 3, image_size, image_size), dtype=torch.uint8, generator=gen)
        self.frames = frames.pin_memory() if device.type == "cuda" else frames
        self.device = device

    def video(self, count: int) -> PooledVideo:
        """A ``count``-frame video over the pool (host memory; sliced per micro-batch)."""
        return PooledVideo(self.frames, count)

    def batch(self, count: int) -> Tensor:
        """(count, 3, H, W) uint8 on the device."""
        return self.video(count)[0:count].to(self.device, non_blocking=True)


class PooledVideo:
    """``count`` frames cycling over a (pool, 3, H, W) host tensor; a slice is a view of the pool
    (pinned, so the copy to the device is asynchronous) when it does not wrap around."""

    def __init__(self, pool: Tensor, count: int) -> None:
        self.pool, self.count = pool, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: slice) -> Tensor:
        start, stop, _ = index.indices(self.count)
        n = self.pool.shape[0]
        if start % n + (stop - start) <= n:
            return self.pool[start % n : start % n + stop - start]
        return self.pool[torch.arange(start, stop) % n]


def prompt_ids(model: VideoLM, instruction_words: int, device: torch.device) -> tuple[Tensor, int]:
    """(1, L) ids "User : <video> <instruction words>" and the number of tokens after the video."""
    tok = model.tokenizer
    assert tok is not None
    words = list(PROMPT_WORDS * (instruction_words // len(PROMPT_WORDS) + 1))[:instruction_words]
    before = tok("User :", add_special_tokens=False)["input_ids"]
    after = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[*before, video_token_id(tok), *after]], device=device)
    return ids, len(after)


@torch.no_grad()
def embed_prompt(model: VideoLM, vision: Tensor, ids: Tensor) -> tuple[Tensor, SequenceState]:
    """(F, N, D) vision tokens + (1, L) prompt ids -> (1, T, D) hidden and its state."""
    assert model.tokenizer is not None
    with region("splice"):
        text = model.backbone.embed(ids)  # (1, L, D)
        lengths = torch.tensor([ids.shape[1]], device=ids.device)
        per_sample = torch.tensor([vision.shape[0] * vision.shape[1]], device=ids.device)
        hidden, state, _ = splice(
            text,
            ids,
            lengths,
            lengths,
            vision.flatten(0, 1).to(text.dtype),
            per_sample,
            video_token_id(model.tokenizer),
        )
    return hidden, state


@dataclass
class PrefillResult:
    token: Tensor  # (1,) the first generated token
    seq_len: int  # tokens entering the backbone
    seq_len_final: int  # tokens reaching the last layer


@torch.no_grad()
def prefill(
    model: VideoLM, source: FrameSource, frames: int, ids: Tensor, marks: Marks | None = None, encode: bool = True
) -> PrefillResult:
    """Frames -> first token: ``model.encode_video`` (encoder + projector per micro-batch), the
    prompt splice, then the backbone with its stages and a generation cache and the LM head
    (``greedy_generate`` for one token). Marks 'embedded' and 'first_token' when given.

    ``encode=False`` skips encoder and projector and feeds random vision tokens of the same
    shape and dtype (the backbone's time and memory alone)."""
    tok = model.tokenizer
    assert tok is not None and tok.eos_token_id is not None
    if encode:
        vision = model.encode_video(source.video(frames))  # (F, N, D)
    else:
        n = model.projector.tokens_per_frame(model.encoder.num_patches)
        p = next(model.projector.parameters())
        vision = torch.randn(frames, n, model.backbone.hidden_size, dtype=p.dtype, device=p.device)
    hidden, state = embed_prompt(model, vision, ids)
    del vision
    if marks is not None:
        marks.mark("embedded")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    result = greedy_generate(
        model.backbone, hidden, state, model.stages(), 1, tok.eos_token_id, pad, marks, donate=True
    )
    return PrefillResult(result.tokens[:, 0], state.length, result.prefill.state.length)


def training_batch(
    model: VideoLM, source: FrameSource, frames: int, batch_size: int, instruction_words: int, answer_words: int
) -> VideoBatch:
    """``batch_size`` samples of ``frames`` frames each, prompt + answer + eos, labels on the answer."""
    tok = model.tokenizer
    assert tok is not None
    device = source.device
    prompt, _ = prompt_ids(model, instruction_words, device)
    answer = tok(" ".join((["the", "red", "square"] * answer_words)[:answer_words]), add_special_tokens=False)[
        "input_ids"
    ] + [tok.eos_token_id]
    row = torch.cat([prompt[0], torch.tensor(answer, device=device)])  # (L,)
    ids = row.unsqueeze(0).repeat(batch_size, 1)  # (B, L)
    labels = torch.full_like(ids, -100)
    labels[:, prompt.shape[1] :] = ids[:, prompt.shape[1] :]
    return VideoBatch(
        frames=source.batch(frames * batch_size),
        frames_per_sample=torch.full((batch_size,), frames, device=device),
        input_ids=ids,
        attention_mask=torch.ones_like(ids, dtype=torch.bool),
        labels=labels,
        prompt_lengths=torch.full((batch_size,), prompt.shape[1], device=device),
        meta=[{} for _ in range(batch_size)],
    )
