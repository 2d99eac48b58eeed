"""Encoding frames into real video files with PyAV (synthetic data, test fixtures, benchmarks)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np


def encode_video(
    frames: np.ndarray,
    *,
    fps: float = 1.0,
    pts: Sequence[float] | None = None,
    codec: str = "mpeg4",
    container_format: str = "mp4",
    gop: int = 16,
    bit_rate: int | None = None,
) -> bytes:
    """Encode RGB frames into a video file held in memory.

    Args:
        frames: (F, H, W, 3) uint8 RGB, H and W even.
        fps: nominal frame rate (frames per second); frame i is shown at i / fps unless ``pts``.
        pts: optional presentation time of each frame in seconds (increasing): a variable frame
            rate video. Timestamps are kept to the millisecond.
        codec: PyAV encoder name ("mpeg4" always exists; "libx264", "libvpx-vp9" if built in).
        container_format: "mp4", "matroska", "webm", "avi" or "mov".
        gop: keyframe interval in frames.
        bit_rate: bits per second; by default high enough to be near lossless at small sizes.

    Returns:
        The file's bytes. Encoding is single-threaded, so equal inputs give equal bytes.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    num, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"frame size {height}x{width} must be even for yuv420p encoding")
    if pts is not None and len(pts) != num:
        raise ValueError(f"got {len(pts)} timestamps for {num} frames")
    buf = io.BytesIO()
    container = av.open(buf, mode="w", format=container_format)
    rate = Fraction(fps).limit_denominator(1000)
    stream: Any = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.bit_rate = bit_rate or max(400_000, int(height * width * 100 * max(fps, 1.0)))
    stream.gop_size = gop
    stream.thread_count = 1
    time_base = Fraction(1, 1000) if pts is not None else Fraction(1, 1) / rate
    stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "crf": "12", "threads": "1"}
    container.metadata.clear()
    for i in range(num):
        frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
        frame.pts = round(pts[i] * 1000) if pts is not None else i
        frame.time_base = time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()
