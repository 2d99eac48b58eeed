"""Video and image decoding with PyAV: timestamp-based sampling, seeking, square resize.

Frames are chosen by presentation time (``pts * time_base``), never by frame counts, so variable
frame-rate videos are sampled correctly: for every target time ``t`` the frame shown at ``t`` (the
last frame with ``pts <= t``) is taken. Long videos are not decoded end to end: when the next target
is further ahead than a keyframe interval, the demuxer seeks to the keyframe before it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch import Tensor

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


class DecodeError(ValueError):
    """The media could not be decoded (corrupt, truncated, empty or no video stream)."""


@dataclass
class DecodedVideo:
    """Sampled frames of one video (or image).

    frames: (F, 3, S, S) uint8 RGB, S = image_size.
    timestamps: (F,) float32 seconds from the start of the video (presentation time of each frame).
    duration: seconds of the whole video (0.0 for an image).
    fps: effective sampling rate of the returned frames, frames per second of the sampled window.
    num_decoded: frames the decoder produced (less than the video's frames when it seeks).
    """

    frames: Tensor  # (F, 3, S, S) uint8
    timestamps: Tensor  # (F,) float32, seconds
    duration: float
    fps: float
    num_decoded: int = 0


def _open(source: bytes | str | Path) -> Any:
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            return av.open(io.BytesIO(bytes(source)), mode="r")
        return av.open(str(source), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exn:
        raise DecodeError(f"cannot open media: {exn}") from exn


def _to_array(frame: Any, image_size: int, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """One PyAV frame -> (S, S, 3) uint8 RGB, resized by swscale (area filter when shrinking).

    Pass one ``reformatter`` for all frames of a video: it keeps the swscale context."""
    interp = "AREA" if frame.width > image_size or frame.height > image_size else "BILINEAR"
    fmt = reformatter or VideoReformatter()
    out = fmt.reformat(frame, width=image_size, height=image_size, format="rgb24", interpolation=interp)
    return out.to_ndarray()


def _probe_duration(container: Any, stream: Any, tb: Fraction, start_pts: int) -> float:
    """Duration in seconds from stream or container headers, else by demuxing packet timestamps."""
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * tb)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / av.time_base
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = max(end, float((packet.pts - start_pts + (packet.duration or 0)) * tb))
    container.seek(0, stream=stream, backward=True)
    return end


def sample_times(
    start: float, end: float, *, fps: float | None, num_frames: int | None, max_frames: int | None
) -> list[float]:
    """Target times (seconds) inside [start, end): every 1/fps s (centred in each interval) or
    ``num_frames`` uniformly; at least one; capped at ``max_frames`` by uniform subsampling."""
    length = max(end - start, 0.0)
    if num_frames is not None:
        n = max(int(num_frames), 1)
        times = [start + (i + 0.5) * length / n for i in range(n)]
    elif fps is not None and fps > 0:
        n = max(math.ceil(length * fps - 1e-6), 1)
        times = [min(start + (i + 0.5) / fps, start + length) for i in range(n)]
    else:
        raise ValueError("pass fps > 0 or num_frames >= 1")
    if max_frames is not None and len(times) > max_frames:
        keep = np.linspace(0, len(times) - 1, max(int(max_frames), 1)).round().astype(int)
        times = [times[i] for i in keep]
    return times


def decode_video(
    source: bytes | str | Path,
    *,
    image_size: int,
    fps: float | None = 1.0,
    num_frames: int | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    seek_threshold_s: float = 4.0,
    threads: int = 1,
) -> DecodedVideo:
    """Decode a video from bytes or a path and sample frames by presentation time.

    Args:
        source: encoded file contents (a shard member) or a path.
        image_size: output side S in pixels (frames are resized to S x S).
        fps: sampling rate in frames per second (ignored when ``num_frames`` is given).
        num_frames: sample exactly this many frames uniformly over the window instead.
        max_frames: cap; more targets are uniformly subsampled down to this many.
        start, end: optional time window in seconds (clipped to the video).
        seek_threshold_s: seek instead of decoding forward when the next target is further ahead.
        threads: codec threads (1: none, the best choice inside DataLoader workers; 0: FFmpeg's choice).

    Returns:
        :class:`DecodedVideo` with frames (F, 3, S, S) uint8 and timestamps (F,) seconds.

    Raises:
        DecodeError: the data is not a decodable video or yields no frame.
    """
    container = _open(source)
    try:
        if not container.streams.video:
            raise DecodeError("no video stream in the file")
        stream = container.streams.video[0]
        if threads != 1:
            stream.thread_type = "AUTO"
            stream.thread_count = threads
        tb = stream.time_base or Fraction(1, av.time_base)
        start_pts = stream.start_time or 0
        duration = _probe_duration(container, stream, tb, start_pts)
        t0 = max(start or 0.0, 0.0)
        t1 = duration if end is None else min(end, duration) if duration > 0 else end
        t0 = min(t0, t1) if duration > 0 else t0
        targets = sample_times(t0, t1, fps=fps, num_frames=num_frames, max_frames=max_frames)
        picked, times, num_decoded = _pick_frames(
            container, stream, tb, start_pts, targets, image_size, seek_threshold_s
        )
    except (av.FFmpegError, EOFError) as exn:
        raise DecodeError(f"corrupt or truncated video: {exn}") from exn
    finally:
        container.close()
    frames = torch.from_numpy(picked).permute(0, 3, 1, 2)  # (F, 3, S, S), channels-last memory
    stamps = torch.tensor(times, dtype=torch.float32)  # (F,)
    window = max(t1 - t0, 1e-6)
    return DecodedVideo(
        frames=frames, timestamps=stamps, duration=float(duration), fps=len(times) / window, num_decoded=num_decoded
    )


def _pick_frames(
    container: Any,
    stream: Any,
    tb: Fraction,
    start_pts: int,
    targets: list[float],
    image_size: int,
    seek_threshold_s: float,
) -> tuple[np.ndarray, list[float], int]:
    """For each target time the last frame with time <= target (the first frame if none).

    Returns frames (F, S, S, 3) uint8, their times (s) and the number of frames decoded. Frames are
    converted straight into one preallocated array: keeping per-frame arrays alive would defeat
    FFmpeg's buffer pool and cost a fresh allocation (page faults) per frame."""
    out = np.empty((len(targets), image_size, image_size, 3), dtype=np.uint8)  # (F, S, S, 3)
    times: list[float] = []
    reformatter = VideoReformatter()
    last_taken: list[Any] = [None, -1]  # [frame, slot]: a frame serving several targets is converted once
    prev: Any = None
    prev_t = -math.inf
    keyframe_gap = 0.0  # largest keyframe interval seen so far (s)
    last_key_t: float | None = None
    i = 0
    last_t = -1.0
    decoded = 0

    def take(frame: Any, t: float) -> None:
        k = len(times)
        if last_taken[0] is frame:
            out[k] = out[last_taken[1]]
        else:
            out[k] = _to_array(frame, image_size, reformatter)
            last_taken[0], last_taken[1] = frame, k
        times.append(t)

    sought = -1  # index of the last target sought: at most one seek per target, so no loop
    landing: float | None = None  # target of a seek whose first frame is not seen yet

    def seek_to(index: int) -> None:
        nonlocal sought, landing, last_key_t
        container.seek(int(targets[index] / tb) + start_pts, stream=stream, backward=True, any_frame=False)
        sought, landing, last_key_t = index, targets[index], None

    if targets[0] > seek_threshold_s:
        seek_to(0)
    while i < len(targets):
        restarted = False
        for frame in container.decode(stream):
            decoded += 1
            if frame.pts is not None:
                t = float((frame.pts - start_pts) * tb)
            else:  # no timestamp: assume the nominal rate after the previous frame
                rate = float(stream.average_rate or 1)
                t = last_t + 1.0 / rate
            last_t = t
            if landing is not None:  # a seek landing far before its target reveals sparse keyframes
                keyframe_gap, landing = max(keyframe_gap, landing - t), None
            if frame.key_frame:
                if last_key_t is not None and t > last_key_t:
                    keyframe_gap = max(keyframe_gap, t - last_key_t)
                last_key_t = t
            while i < len(targets) and t > targets[i]:
                take(prev if prev is not None else frame, prev_t if prev is not None else t)
                i += 1
            if i >= len(targets):
                break
            prev, prev_t = frame, t
            if i > sought and targets[i] - t > max(seek_threshold_s, 2.0 * keyframe_gap):
                seek_to(i)
                restarted = True
                break
        if not restarted:
            break
    if prev is None:
        raise DecodeError("the video has no decodable frame")
    while i < len(targets):  # targets past the last frame: the last frame is still on screen
        take(prev, prev_t)
        i += 1
    return out, times, decoded


def decode_image(source: bytes | str | Path, *, image_size: int) -> DecodedVideo:
    """Decode a JPEG/PNG image into a one-frame :class:`DecodedVideo` (timestamp 0, duration 0)."""
    container = _open(source)
    try:
        frame = next(container.decode(video=0))
        array = _to_array(frame, image_size)
    except (av.FFmpegError, StopIteration, IndexError) as exn:
        raise DecodeError(f"corrupt image: {exn}") from exn
    finally:
        container.close()
    frames = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, S, S)
    return DecodedVideo(frames=frames, timestamps=torch.zeros(1), duration=0.0, fps=0.0)
