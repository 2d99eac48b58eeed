"""The one micro-batching loop over the frames of a video.

Encoders and the projector run a video in micro-batches of frames, so that activations (and the
(F, P, Dv) patch features of the whole video) never exist at once; the benchmarks serve frames
from host memory one micro-batch at a time. All of them use :func:`map_frames`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor


class FrameSequence(Protocol):
    """Frames that can be sliced along the first axis: a (F, 3, H, W) tensor, or a host-side
    source that materialises only the slice asked for (e.g. the benchmarks' frame pool)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Tensor: ...


def map_frames(
    fn: Callable[[Tensor], Tensor], frames: FrameSequence, micro_batch: int, device: torch.device | None = None
) -> Tensor:
    """``fn`` over ``frames`` in micro-batches of ``micro_batch`` frames -> the outputs along dim 0.

    Each slice is moved to ``device`` (non-blocking from pinned memory) when given. The outputs
    are written into one buffer allocated after the first micro-batch (no list + cat, so the
    result is the only full-video tensor alive). Returns (F, ...) with ``fn``'s trailing shape.
    """
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1 frame, got {micro_batch}")
    total = len(frames)
    out: Tensor | None = None
    for start in range(0, total, micro_batch):
        chunk = frames[start : start + micro_batch]
        if device is not None:
            chunk = chunk.to(device, non_blocking=True)
        result = fn(chunk)  # (f, ...)
        if out is None:
            if start + result.shape[0] >= total:  # a single micro-batch: nothing to copy
                return result
            out = result.new_empty((total, *result.shape[1:]))
        out[start : start + result.shape[0]] = result
    if out is None:
        raise ValueError("map_frames needs at least one frame")
    return out
