"""PyAV helpers: encoding frames into real video files (synthetic data, test fixtures, benchmarks)
and reading what a video stream's headers say about its timing and display rotation."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np

log = logging.getLogger(__name__)

_HMS = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


def encode_video(
    frames: np.ndarray,
    *,
    fps: float = 1.0,
    pts: Sequence[float] | None = None,
    codec: str = "mpeg4",
    container_format: str = "mp4",
    gop: int = 16,
    bit_rate: int | None = None,
    rotation: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Encode RGB frames into a video file held in memory.

    Args:
        frames: (F, H, W, 3) uint8 RGB, H and W even.
        fps: nominal frame rate (frames per second); frame i is shown at i / fps unless ``pts``.
        pts: optional presentation time of each frame in seconds (increasing): a variable frame
            rate video, or one whose first timestamp is not 0. Timestamps are kept to the millisecond.
        codec: PyAV encoder name ("mpeg4" always exists; "libx264", "libvpx-vp9" if built in).
        container_format: "mp4", "matroska", "webm", "avi" or "mov".
        gop: keyframe interval in frames.
        bit_rate: bits per second; by default high enough to be near lossless at small sizes.
        rotation: display rotation written as the stream's display matrix, degrees
            counter-clockwise (what ``VideoFrame.rotation`` reads back; a portrait phone video
            filmed upright has -90).
        metadata: stream metadata tags (e.g. ``{"rotate": "90"}``, the legacy rotation tag).

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
    if rotation is not None:
        stream.set_display_rotation(rotation)
    time_base = Fraction(1, 1000) if pts is not None else Fraction(1, 1) / rate
    stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "crf": "12", "threads": "1"}
    container.metadata.clear()
    stream.metadata.update(dict(metadata or {}))
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


def _tag(metadata: Mapping[str, str], name: str) -> str | None:
    """A metadata tag by case-insensitive name (Matroska upper-cases its tags)."""
    return next((v for k, v in metadata.items() if k.lower() == name), None)


def _hms_seconds(text: str) -> float | None:
    """``HH:MM:SS.fraction`` -> seconds, None when the text has another form."""
    match = _HMS.match(text.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def is_matroska(container: Any) -> bool:
    """The container is Matroska or WebM (FFmpeg's demuxer name is ``matroska,webm``)."""
    return "matroska" in str(container.format.name)


def declared_span(container: Any, stream: Any) -> tuple[float, float | None]:
    """(first timestamp, end) of a video stream in seconds, from the headers; end None if unknown.

    In order: the stream's own duration (a span from its first timestamp: MP4, MOV, AVI); the
    Matroska track's ``DURATION`` tag; the container duration. Matroska's segment duration and
    the ``DURATION`` tag FFmpeg writes count from time 0, so for a WebM / MKV whose first timestamp
    is 2.5 s and whose last frame ends at 7.5 s they say 7.5 s: the video lasts 5 s. FFmpeg's other
    demuxers report the container duration as a span from the container's start time.
    """
    tb = stream.time_base or Fraction(1, av.time_base)
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    if stream.duration is not None and stream.duration > 0:
        return start, start + float(stream.duration * tb)
    matroska = is_matroska(container)
    tag = _tag(stream.metadata, "duration") if matroska else None
    tag_end = _hms_seconds(tag) if tag is not None else None
    if tag_end is not None and tag_end > start:
        return start, tag_end
    if container.duration is not None and container.duration > 0:
        total = float(container.duration) / av.time_base
        if matroska:
            return start, total
        origin = float(container.start_time) / av.time_base if container.start_time is not None else start
        return start, origin + total
    return start, None


def rotate_tag_turns(stream: Any) -> int:
    """Counter-clockwise quarter turns (0-3) from a stream's legacy ``rotate`` tag (0 if none).

    The tag holds the clockwise rotation that shows the video upright (FFmpeg's old convention:
    ``rotate=90`` for a portrait phone video filmed upright)."""
    tag = _tag(stream.metadata, "rotate")
    if tag is None:
        return 0
    try:
        degrees = float(tag)
    except ValueError:
        log.warning("ignoring a 'rotate' tag that is not a number: %r", tag)
        return 0
    return quarter_turns(-degrees)


def quarter_turns(degrees: float) -> int:
    """Counter-clockwise rotation in degrees -> quarter turns 0-3 (nearest multiple of 90)."""
    return round(degrees / 90.0) % 4
