"""Synthetic long-video tasks rendered into real MP4 files inside WebDataset shards.

Every video shows a few grey shapes drifting over a grey background at 1 frame per second (frame i
is second i). The answer lives in a few frames only:

* ``mcq``       a big star in one of four saturated colours (red, green, blue, yellow) shows for
                ``needle_frames`` consecutive frames: "What colour was the star?", options A-D.
* ``grounding`` a big red square shows from second X to Y: "When did the red square appear?",
                answer "from X to Y seconds", span [X, Y].
* ``count``     a magenta circle flashes k times (one frame each): "How many times did the circle
                flash?", answer the digit k.

Distractors are greyscale, so no colour other than the needle's is ever on screen: a model that
keeps the needle frames' tokens can answer, one that drops them cannot.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_viper.data.sample import TASKS
from lightning_viper.data.shards import ShardWriter
from lightning_viper.data.video_io import encode_video

log = logging.getLogger(__name__)

STAR_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 220, 30),
}
FLASH_COLOUR = (220, 40, 220)  # magenta circle of the count task
SQUARE_COLOUR = STAR_COLOURS["red"]  # grounding target
SYNTH_TASKS = ("mcq", "grounding", "count")
QUESTIONS = {
    "mcq": "What colour was the star?",
    "grounding": "When did the red square appear?",
    "count": "How many times did the circle flash?",
}


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic data set. ``num_frames`` = seconds per video (1 fps)."""

    num_samples: int = 256
    num_frames: int = 16
    image_size: int = 32
    needle_frames: int = 2
    num_distractors: int = 3
    tasks: tuple[str, ...] = ("mcq",)
    seed: int = 0
    shuffle_options: bool = False
    codec: str = "mpeg4"
    samples_per_shard: int = 256
    version: int = field(default=1)  # bump when the renderer changes, so caches are rebuilt

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in SYNTH_TASKS]
        if bad or not self.tasks:
            raise ValueError(f"unknown synthetic task(s) {bad}: choose from {SYNTH_TASKS}")
        if self.num_frames < max(2, self.needle_frames) or self.needle_frames < 1:
            raise ValueError(f"need 1 <= needle_frames ({self.needle_frames}) <= num_frames ({self.num_frames})")
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"image_size must be even and >= 16, got {self.image_size}")
        assert set(SYNTH_TASKS) <= set(TASKS)

    def digest(self) -> str:
        """Short hash of all knobs: the cache key of generated data."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _shape_mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy * dy + dx * dx <= r * r
    if kind == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= r
    if kind == "triangle":
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == "star":  # five points: radius swings between 0.4 r and r with the angle
        theta = np.arctan2(dy, dx) + np.pi / 2
        rho = r * (0.4 + 0.6 * np.abs(np.cos(2.5 * theta)) ** 2)
        return dy * dy + dx * dx <= rho * rho
    raise ValueError(kind)


def render_sample(cfg: SynthConfig, rng: np.random.Generator, task: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one video and its annotation. Returns frames (F, S, S, 3) uint8 and the JSON dict."""
    n, s = cfg.num_frames, cfg.image_size
    yy, xx = _grid(s)
    background = int(rng.integers(20, 70))
    frames = np.full((n, s, s, 3), background, dtype=np.uint8)  # (F, S, S, 3)
    kinds = rng.choice(["circle", "square", "triangle"], size=cfg.num_distractors)
    pos = rng.uniform(0.15 * s, 0.85 * s, size=(cfg.num_distractors, 2))
    vel = rng.uniform(-0.12 * s, 0.12 * s, size=(cfg.num_distractors, 2))
    radius = rng.uniform(0.07 * s, 0.14 * s, size=cfg.num_distractors)
    grey = rng.integers(90, 210, size=cfg.num_distractors)
    for f in range(n):
        for d in range(cfg.num_distractors):
            frames[f][_shape_mask(str(kinds[d]), yy, xx, pos[d, 0], pos[d, 1], radius[d])] = grey[d]
        pos += vel
        out = (pos < 0.1 * s) | (pos > 0.9 * s)
        vel[out] *= -1.0
        pos = np.clip(pos, 0.1 * s, 0.9 * s)
    ann: dict[str, Any] = {"task": task, "question": QUESTIONS[task], "duration": float(n), "source": "synthetic"}
    centre = rng.uniform(0.4 * s, 0.6 * s, size=2)
    if task == "mcq":
        names = list(STAR_COLOURS)
        if cfg.shuffle_options:
            names = [names[i] for i in rng.permutation(len(names))]
        index = int(rng.integers(len(names)))
        start = int(rng.integers(0, n - cfg.needle_frames + 1))
        mask = _shape_mask("star", yy, xx, centre[0], centre[1], 0.36 * s)
        frames[start : start + cfg.needle_frames, mask] = STAR_COLOURS[names[index]]
        letters = "ABCD"
        ann.update(
            options=[f"{letters[i]}. {c}" for i, c in enumerate(names)],
            answer=letters[index],
            answer_index=index,
            span=[float(start), float(start + cfg.needle_frames)],
        )
    elif task == "grounding":
        length = int(rng.integers(cfg.needle_frames, min(2 * cfg.needle_frames, n) + 1))
        start = int(rng.integers(0, n - length + 1))
        mask = _shape_mask("square", yy, xx, centre[0], centre[1], 0.25 * s)
        frames[start : start + length, mask] = SQUARE_COLOUR
        ann.update(answer=f"from {start} to {start + length} seconds", span=[float(start), float(start + length)])
    else:  # count: k one-frame flashes, never in adjacent frames
        k = int(rng.integers(1, min(5, (n + 1) // 2) + 1))
        slots = np.sort(rng.choice((n + 1) // 2, size=k, replace=False)) * 2
        mask = _shape_mask("circle", yy, xx, centre[0], centre[1], 0.3 * s)
        for f in slots:
            frames[int(f), mask] = FLASH_COLOUR
        ann.update(answer=str(k), flashes=[int(f) for f in slots])
    return frames, ann


def generate_shards(cfg: SynthConfig, out_dir: str | Path, prefix: str = "shard") -> list[Path]:
    """Render ``cfg.num_samples`` videos into tar shards under ``out_dir``; deterministic in ``cfg``."""
    rng = np.random.default_rng(cfg.seed)
    writer = ShardWriter(out_dir, prefix=prefix, max_count=cfg.samples_per_shard, max_bytes=1 << 40)
    for i in range(cfg.num_samples):
        task = cfg.tasks[i % len(cfg.tasks)]
        frames, ann = render_sample(cfg, rng, task)
        video = encode_video(frames, fps=1.0, codec=cfg.codec, gop=min(16, cfg.num_frames))
        writer.write(f"{task}_{cfg.seed:04d}_{i:07d}", {"mp4": video, "json": json.dumps(ann, sort_keys=True).encode()})
    return writer.close()


def synth(
    out_dir: str,
    num_samples: int = 256,
    num_frames: int = 16,
    image_size: int = 32,
    needle_frames: int = 2,
    num_distractors: int = 3,
    tasks: list[str] | None = None,
    seed: int = 0,
    shuffle_options: bool = False,
    codec: str = "mpeg4",
    samples_per_shard: int = 256,
) -> dict[str, Any]:
    """Generate synthetic long-video shards (real MP4s at 1 fps) into ``out_dir``.

    Args:
        out_dir: output directory (created); shards are ``shard-000000.tar``, ...
        num_samples: number of videos.
        num_frames: frames per video (= seconds; 16 up to thousands).
        image_size: frame side in pixels (even).
        needle_frames: how many consecutive frames show the needle (star / square).
        num_distractors: grey shapes drifting around.
        tasks: subset of ["mcq", "grounding", "count"], cycled over samples (default ["mcq"]).
        seed: random seed; the same knobs give byte-identical shards.
        shuffle_options: shuffle the colour order of the options per sample (harder).
        codec: PyAV video encoder ("mpeg4", "libx264", ...).
        samples_per_shard: samples per tar shard.

    Returns:
        Summary dict: ``shards`` (paths), ``num_samples``, ``bytes``, ``config``.
    """
    cfg = SynthConfig(
        num_samples=num_samples,
        num_frames=num_frames,
        image_size=image_size,
        needle_frames=needle_frames,
        num_distractors=num_distractors,
        tasks=tuple(tasks or ("mcq",)),
        seed=seed,
        shuffle_options=shuffle_options,
        codec=codec,
        samples_per_shard=samples_per_shard,
    )
    paths = generate_shards(cfg, out_dir)
    summary = {
        "shards": [str(p) for p in paths],
        "num_samples": num_samples,
        "bytes": sum(p.stat().st_size for p in paths),
        "config": asdict(cfg),
    }
    log.info("wrote %d synthetic samples in %d shards to %s", num_samples, len(paths), out_dir)
    return summary
