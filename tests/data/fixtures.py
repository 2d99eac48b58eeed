"""Helpers shared by the data, datamodule and text tests: tiny real videos and shards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_viper.data.shards import write_shard
from lightning_viper.data.video_io import encode_video


def grey_level(i: int) -> int:
    """Grey value of frame i in :func:`grey_frames` (distinct for i < 16, 12 levels apart)."""
    return 20 + 12 * (i % 16)


def grey_frames(num_frames: int, size: int = 16) -> np.ndarray:
    """(F, S, S, 3) uint8, frame i uniformly grey_level(i)."""
    levels = np.array([grey_level(i) for i in range(num_frames)], dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).copy()


def grey_video(num_frames: int, size: int = 16, **kwargs: Any) -> bytes:
    return encode_video(grey_frames(num_frames, size), **kwargs)


def annotation(task: str = "mcq", **fields: Any) -> bytes:
    base: dict[str, Any] = {"task": task, "question": "What colour was the star?", "source": "test"}
    if task == "mcq":
        base.update(options=["A. red", "B. green", "C. blue", "D. yellow"], answer="C", answer_index=2)
    elif task == "grounding":
        base.update(answer="from 1 to 3 seconds", span=[1.0, 3.0])
    else:
        base.update(answer="3")
    base.update(fields)
    return json.dumps(base).encode()


def good_sample(key: str, num_frames: int = 4, size: int = 16, task: str = "mcq") -> tuple[str, dict[str, bytes]]:
    return key, {"mp4": grey_video(num_frames, size), "json": annotation(task)}


def make_shards(directory: Path, shards: Sequence[Sequence[tuple[str, dict[str, bytes]]]]) -> list[Path]:
    """Write shards ``directory/shard-000000.tar``, ... with the given samples."""
    paths = []
    for i, samples in enumerate(shards):
        path = directory / f"shard-{i:06d}.tar"
        write_shard(path, samples)
        paths.append(path)
    return paths


def noisy_frames(num_frames: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(F, S, S, 3) uint8 random frames: they do not compress, so a file's bytes grow with its frames."""
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


def truncated_webm(num_frames: int = 16, keep: float = 0.5) -> bytes:
    """A VP9 WebM of ``num_frames`` s (1 fps, keyframe every 4 frames) cut after ``keep`` of its bytes:
    the header still declares the full duration, the frames after the cut are gone."""
    data = encode_video(noisy_frames(num_frames), codec="libvpx-vp9", container_format="webm", gop=4)
    return data[: int(len(data) * keep)]


def quadrant_frames(num_frames: int = 2, height: int = 32, width: int = 64) -> np.ndarray:
    """(F, H, W, 3) uint8: dark, with the top-left quadrant bright (orientation is observable)."""
    frames = np.full((num_frames, height, width, 3), 30, dtype=np.uint8)
    frames[:, : height // 2, : width // 2] = 220
    return frames


def bright_quadrant(frame: Any) -> str:
    """Which quadrant of a (3, S, S) frame is brightest: "top-left", "top-right", "bottom-left", "bottom-right"."""
    grey = frame.float().mean(0)  # (S, S)
    h, w = grey.shape[0] // 2, grey.shape[1] // 2
    means = {
        "top-left": grey[:h, :w].mean(),
        "top-right": grey[:h, w:].mean(),
        "bottom-left": grey[h:, :w].mean(),
        "bottom-right": grey[h:, w:].mean(),
    }
    return max(means, key=lambda name: float(means[name]))
