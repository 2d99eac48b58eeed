"""Host memory of one train DataLoader worker at real-scale data settings (``viper bench data --memory``).

One worker is one reader of the train stream: it holds the shuffle buffer of ENCODED samples, the
sample being decoded, and the batches waiting in its prefetch queue. The benchmark streams synthetic
videos (default 384 px, 256 frames at 1 fps, as the 9B recipes read them) through the real
``TrainStream`` in one DataLoader worker, with the buffer filled before the first sample so it is
measured full, and reads the worker's peak resident memory (``VmHWM``) from ``/proc``. A run with a
one-sample buffer gives the worker's baseline (interpreter, torch, decoder); the difference is
what the buffer costs.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lightning_viper.data.bench import bench_inputs
from lightning_viper.data.collate import VideoCollator
from lightning_viper.data.sample import SampleDecoder
from lightning_viper.data.stream import TrainStream, count_samples

log = logging.getLogger(__name__)
GIB = 1 << 30


def _peak_rss(pid: int) -> int:
    """Peak resident set size of a live process in bytes (Linux ``/proc/<pid>/status`` VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status: memory benchmark needs Linux")


def _worker_peak(
    urls: list[str], decoder: SampleDecoder, collator: VideoCollator, buffer: int, batches: int, batch_size: int
) -> dict[str, float]:
    stream = TrainStream([urls], [1.0], decoder, epoch_samples=10**9, shuffle_buffer=buffer, shuffle_initial=buffer)
    loader = DataLoader(stream, batch_size=batch_size, num_workers=1, collate_fn=collator, prefetch_factor=2)
    start = time.perf_counter()
    iterator = iter(loader)
    first = next(iterator)
    first_s = time.perf_counter() - start
    frames = int(first.frames.shape[0])
    for _ in range(batches - 1):
        frames += int(next(iterator).frames.shape[0])
    workers = getattr(iterator, "_workers", [])
    if not workers:
        raise RuntimeError("DataLoader exposes no worker process to measure")
    peak = _peak_rss(workers[0].pid)
    del iterator
    return {"peak_bytes": peak, "first_batch_s": first_s, "frames": frames}


def bench_data_memory(
    shards: str | None = None,
    num_videos: int = 8,
    num_frames: int = 256,
    source_size: int = 384,
    image_size: int = 384,
    fps: float = 1.0,
    max_frames: int | None = 256,
    shuffle_buffer: int = 1000,
    batch_size: int = 1,
    batches: int = 4,
) -> dict[str, Any]:
    """Peak host memory of one train worker with a full shuffle buffer, and the baseline without one.

    Args:
        shards: train shards to stream; by default ``num_videos`` synthetic videos of ``num_frames``
            frames at ``source_size`` px are generated (the stream resamples them, so the buffer holds
            ``shuffle_buffer`` real copies of their bytes).
        image_size, fps, max_frames: decoding, as in the datamodule (9B recipes: 384, 1.0, 256).
        shuffle_buffer: encoded samples the buffer holds (9B recipes: 1000).
        batch_size, batches: batches read after the buffer is full (prefetch included in the peak).

    Returns:
        ``peak_gib`` (worker peak RSS with the buffer full), ``baseline_gib`` (buffer of 1),
        ``buffer_gib`` (their difference), ``mean_sample_mb`` (encoded bytes per sample),
        ``buffer_estimate_gib`` (= shuffle_buffer x mean sample bytes), ``decoded_sample_mb`` and
        ``decoded_buffer_gib`` (what the same buffer of decoded frames would hold),
        ``first_batch_s``, and the machine.
    """
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        urls, collator = bench_inputs(tmp, shards, num_videos, num_frames, source_size)
        sizes = [os.path.getsize(u) for u in urls]
        samples = sum(count_samples(u) for u in urls)
        decoder = SampleDecoder(image_size=image_size, fps=fps, max_frames=max_frames)
        full = _worker_peak(urls, decoder, collator, shuffle_buffer, batches, batch_size)
        base = _worker_peak(urls, decoder, collator, 1, batches, batch_size)
    mean_sample = sum(sizes) / max(samples, 1)
    frames_per_sample = full["frames"] / (batches * batch_size)
    decoded = frames_per_sample * 3 * image_size * image_size
    result: dict[str, Any] = {
        "shuffle_buffer": shuffle_buffer,
        "image_size": image_size,
        "frames_per_sample": frames_per_sample,
        "peak_gib": full["peak_bytes"] / GIB,
        "baseline_gib": base["peak_bytes"] / GIB,
        "buffer_gib": (full["peak_bytes"] - base["peak_bytes"]) / GIB,
        "mean_sample_mb": mean_sample / 1e6,
        "buffer_estimate_gib": shuffle_buffer * mean_sample / GIB,
        "decoded_sample_mb": decoded / 1e6,
        "decoded_buffer_gib": shuffle_buffer * decoded / GIB,
        "first_batch_s": full["first_batch_s"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch_threads": 1},
    }
    log.info("data memory bench: %s", result)
    return result
