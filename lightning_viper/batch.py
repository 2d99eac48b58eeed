"""The batch object that datamodules produce and ``VideoLM`` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


@dataclass
class VideoBatch:
    """B samples; frames of all samples packed along one axis.

    Each sample's token row holds exactly one video placeholder token (the tokenizer's
    ``<video>``); ``VideoLM`` replaces it with that sample's vision tokens. Text rows are
    right-padded here (the module re-pads on the left once vision tokens are spliced in).
    """

    frames: Tensor  # (F_total, 3, H, W) uint8, resized to the encoder's image_size
    frames_per_sample: Tensor  # (B,) long, sums to F_total; >= 1
    input_ids: Tensor  # (B, L) long: prompt tokens then answer tokens (+ eos), right-padded
    attention_mask: Tensor  # (B, L) bool, True on real tokens
    labels: Tensor  # (B, L) long: answer token ids, -100 on the prompt and padding
    prompt_lengths: Tensor  # (B,) long: tokens of the prompt (including the placeholder)
    meta: list[dict[str, Any]] = field(default_factory=list)
    """Per sample: ``key``, ``task`` ("mcq" | "grounding" | "caption" | "qa" | "count"),
    ``question``, ``answer`` (text), ``options`` (list, mcq), ``answer_index`` (mcq),
    ``span`` ([start_s, end_s], grounding), ``duration`` (s), ``num_frames``, ``fps``."""
    skipped: int = 0  # samples dropped for bad input since the last batch (counted, logged)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> VideoBatch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, Tensor) else value
        return VideoBatch(**moved)
