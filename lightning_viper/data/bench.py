"""Data-loading benchmark: our decode + transform + collate next to raw PyAV decoding of the same frames."""

from __future__ import annotations

import io
import logging
import os
import platform
import tempfile
import time
from typing import Any

import av
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import DataLoader

from lightning_viper.data.collate import VideoCollator
from lightning_viper.data.decode import VIDEO_EXTENSIONS
from lightning_viper.data.sample import SampleDecoder
from lightning_viper.data.stream import EvalStream, SkipCounter, expand_shards, shard_samples
from lightning_viper.data.synth import synth
from lightning_viper.text.templates import PlainTemplate
from lightning_viper.text.tokenizer import build_demo_tokenizer, load_tokenizer

log = logging.getLogger(__name__)


def _raw_pyav(videos: list[bytes]) -> tuple[int, float]:
    """Decode every frame of every video to RGB arrays at native size (one swscale context per
    video, as a careful hand-written loop would); (frames, seconds)."""
    frames = 0
    start = time.perf_counter()
    for data in videos:
        reformatter = VideoReformatter()
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(video=0):
                reformatter.reformat(frame, format="rgb24").to_ndarray()
                frames += 1
    return frames, time.perf_counter() - start


def bench_inputs(
    tmp: str, shards: str | None, num_videos: int, num_frames: int, source_size: int, tokenizer: str | None = None
) -> tuple[list[str], VideoCollator]:
    """Shard URLs (``shards``, or synthetic videos generated into ``tmp``) and a collator (the given
    tokenizer, or the demo tokenizer built into ``tmp``) for the data benchmarks."""
    if shards is None:
        made = synth(os.path.join(tmp, "shards"), num_samples=num_videos, num_frames=num_frames, image_size=source_size)
        shards = made["shards"]
    tok = load_tokenizer(tokenizer or build_demo_tokenizer(os.path.join(tmp, "tok")))
    return expand_shards(shards), VideoCollator(tok, PlainTemplate())


def bench_data(
    shards: str | None = None,
    num_videos: int = 64,
    num_frames: int = 32,
    source_size: int = 128,
    image_size: int = 32,
    fps: float = 1.0,
    max_frames: int | None = 256,
    batch_size: int = 8,
    num_workers: int = 2,
    tokenizer: str | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """Measure data-loading throughput on CPU.

    Args:
        shards: shard pattern to read; by default ``num_videos`` synthetic videos of ``num_frames``
            frames at ``source_size`` px (1 fps) are generated into a temporary folder.
        num_videos, num_frames, source_size: size of the generated data (ignored with ``shards``).
        image_size: output frame side (frames are resized to it).
        fps, max_frames: sampling, as in the datamodule.
        batch_size: batch size of the DataLoader runs.
        num_workers: DataLoader workers of the multi-worker run (0 skips it).
        tokenizer: tokenizer directory (default: the demo tokenizer, built in a temporary folder).
        repeats: each measurement is repeated, interleaved, and the best rate kept (shared CPUs are noisy).

    Returns:
        ``raw_pyav_fps`` (every frame decoded to RGB, native size, one process), ``decode_fps``
        (our sampling + decode + resize, one process), ``pipeline_fps`` (tar reading + decode +
        resize + annotation + tokenize + collate, one process), ``ratio`` = raw / pipeline
        (target <= 2), ``workers_fps`` / ``per_worker_fps`` for ``num_workers`` DataLoader workers,
        and the machine.
    """
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        urls, collator = bench_inputs(tmp, shards, num_videos, num_frames, source_size, tokenizer)
        decoder = SampleDecoder(image_size=image_size, fps=fps, max_frames=max_frames)
        raws = [r for u in urls for r in shard_samples(u, SkipCounter())]
        videos = [next(r[e] for e in VIDEO_EXTENSIONS if e in r) for r in raws]

        _raw_pyav(videos[:2])  # warm-up
        decoder(raws[0])

        def decode_all() -> tuple[int, float]:
            start = time.perf_counter()
            frames = sum(int(decoder(r).frames.shape[0]) for r in raws)
            return frames, time.perf_counter() - start

        def run(workers: int) -> tuple[int, float]:
            loader = DataLoader(
                EvalStream(urls, decoder, 0, 1), batch_size=batch_size, num_workers=workers, collate_fn=collator
            )
            start = time.perf_counter()
            frames = sum(int(b.frames.shape[0]) for b in loader)
            return frames, time.perf_counter() - start

        best: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _ in range(max(repeats, 1)):
            for name, fn in (("raw", lambda: _raw_pyav(videos)), ("decode", decode_all), ("pipe", lambda: run(0))):
                frames, seconds = fn()
                best[name] = max(best.get(name, 0.0), frames / seconds)
                counts[name] = frames
        raw_frames, ours = counts["raw"], counts["decode"]
        result: dict[str, Any] = {
            "videos": len(raws),
            "frames_per_video": ours / max(len(raws), 1),
            "raw_pyav_fps": best["raw"],
            "decode_fps": best["decode"],
            "pipeline_fps": best["pipe"],
            "ratio": best["raw"] / best["pipe"],
            "image_size": image_size,
            "sampled_frames": ours,
            "raw_frames": raw_frames,
        }
        if num_workers > 0:
            w_frames, w_s = run(num_workers)
            result |= {
                "num_workers": num_workers,
                "workers_fps": w_frames / w_s,
                "per_worker_fps": w_frames / w_s / num_workers,
            }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "av": av.__version__,
    }
    log.info("data bench: %s", result)
    return result
