"""Real mp4 needle videos and their documents, for the inference and lmms-eval tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightning_viper.data.synth import SynthConfig, render_sample
from lightning_viper.data.video_io import encode_video


def write_videos(out: Path, count: int, num_frames: int = 8) -> list[dict]:
    """``count`` synthetic needle videos as mp4 files in ``out``; one doc per video (question,
    options, answer letter and index, path)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    cfg = SynthConfig(num_frames=num_frames)
    docs = []
    for i in range(count):
        frames, ann = render_sample(cfg, rng, "mcq")  # (F, S, S, 3) uint8
        path = out / f"needle_{i}.mp4"
        path.write_bytes(encode_video(frames, fps=1.0))
        docs.append({**ann, "video": str(path), "id": i})
    return docs


def write_jsonl(docs: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path
