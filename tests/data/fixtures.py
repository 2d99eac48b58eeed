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
