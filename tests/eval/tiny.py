"""A tiny trained checkpoint of the demo recipe and real mp4 videos, for the inference tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_viper.cli.main import VideoCLI
from lightning_viper.data.synth import SynthConfig, render_sample
from lightning_viper.data.video_io import encode_video
from tests.cli.conftest import DEMO, write_overlay


@dataclass
class Tiny:
    recipe: Path  # the demo recipe
    overlay: Path  # its test overlay (data cache and outputs under the temporary directory)
    checkpoint: Path  # last.ckpt of a 2-step fit


def train_tiny(tmp: Path, synth_cache: Path) -> Tiny:
    """Fit the trimmed demo for 2 steps (seconds on a CPU) and return its recipe, overlay and last.ckpt."""
    overlay = write_overlay(tmp, synth_cache)
    VideoCLI(
        args=["fit", "--config", str(DEMO), "--config", str(overlay), "--trainer.max_steps=2",
              "--trainer.limit_val_batches=0"]
    )  # fmt: skip
    return Tiny(DEMO, overlay, tmp / "ckpt" / "last.ckpt")


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
