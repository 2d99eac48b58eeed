"""Video and image decoding with PyAV: timestamp-based sampling, seeking, rotation, square resize.

Frames are chosen by presentation time (``pts * time_base``), never by frame counts, so variable
frame-rate videos are sampled correctly: for every target time ``t`` the frame shown at ``t`` (the
last frame with ``pts <= t``) is taken. Long videos are not decoded end to end: when the next target
is further ahead than a keyframe interval, the demuxer seeks to the keyframe before it. Times count
from the stream's first timestamp. A file whose data ends before its declared duration (a cut
download or copy) raises :class:`TruncatedVideo` when the decoder reaches its end.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torch import Tensor

from lightning_viper.data.video_io import declared_span, quarter_turns, rotate_tag_turns

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
TRUNCATION_TOLERANCE_S = 0.5  # the data may end this much (or two frame intervals) before the header says


class DecodeError(ValueError):
    """The media could not be decoded (corrupt, truncated, empty or no video stream)."""


class TruncatedVideo(DecodeError):
    """The file's data ends before the duration its headers declare (frames after the cut are missing)."""


@dataclass
class DecodedVideo:
    """Sampled frames of one video (or image).

    frames: (F, 3, S, S) uint8 RGB, S = image_size, upright (the stream's display rotation applied).
    timestamps: (F,) float32 seconds from the start of the video (presentation time of each frame).
    duration: seconds of the whole video, from its first timestamp (0.0 for an image).
    fps: effective sampling rate of the returned frames, frames per second of the sampled window.
    num_decoded: frames the decoder produced (less than the video's frames when it seeks).
    rotation: display rotation applied to the frames, degrees counter-clockwise (0, 90, 180, 270).
    """

    frames: Tensor  # (F, 3, S, S) uint8
    timestamps: Tensor  # (F,) float32, seconds
    duration: float
    fps: float
    num_decoded: int = 0
    rotation: int = 0


@dataclass
class _StreamInfo:
    """Timing of the video stream. ``duration`` counts from the first timestamp (``start_pts``);
    ``declared`` says it came from the headers (so data ending earlier means a truncated file)."""

    stream: Any
    tb: Fraction
    start_pts: int
    duration: float
    declared: bool
    interval: float  # nominal frame interval, seconds


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


def _measure_end(container: Any, stream: Any, tb: Fraction, start_pts: int) -> float:
    """End of the stream (s from its first timestamp) by demuxing every packet; rewinds after."""
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = max(end, float((packet.pts - start_pts + (packet.duration or 0)) * tb))
    container.seek(0, stream=stream, backward=True)
    return end


def _stream_info(container: Any, threads: int) -> _StreamInfo:
    if not container.streams.video:
        raise DecodeError("no video stream in the file")
    stream = container.streams.video[0]
    if threads != 1:
        stream.thread_type = "AUTO"
        stream.thread_count = threads
    tb = stream.time_base or Fraction(1, av.time_base)
    start_pts = stream.start_time or 0
    start, end = declared_span(container, stream)
    declared = end is not None
    duration = end - start if end is not None else _measure_end(container, stream, tb, start_pts)
    rate = stream.average_rate or stream.guessed_rate
    interval = 1.0 / float(rate) if rate else 0.04
    return _StreamInfo(stream, tb, start_pts, max(duration, 0.0), declared, interval)


class _Frames:
    """Decoded frames of the video stream, demuxing every stream so that the end of the file's
    data is known (``data_end``: seconds from the video's first timestamp, over all streams, so a
    video track that ends before the audio is not taken for a cut file)."""

    def __init__(self, container: Any, info: _StreamInfo) -> None:
        self.container, self.info = container, info
        self.at_end = False  # the last decode pass reached the end of the file
        self._ends: dict[int, int] = {}  # stream index -> largest pts + duration seen (its time base)

    def __iter__(self) -> Iterator[Any]:
        self.at_end = False
        index, ends = self.info.stream.index, self._ends
        for packet in self.container.demux():
            pts, i = packet.pts, packet.stream_index
            if pts is not None:
                end = pts + (packet.duration or 0)
                if end > ends.get(i, end - 1):
                    ends[i] = end
            if i == index:
                yield from packet.decode()
        self.at_end = True

    @property
    def data_end(self) -> float:
        """Seconds from the video's first timestamp to the end of the latest packet read (any stream)."""
        start_s = float(self.info.start_pts * self.info.tb)
        streams = self.container.streams
        times = [float(end * (streams[i].time_base or self.info.tb)) for i, end in self._ends.items()]
        return max(times, default=start_s) - start_s

    def check_complete(self) -> None:
        """Raise :class:`TruncatedVideo` if the file ended before the duration its headers declare."""
        info = self.info
        if not (self.at_end and info.declared):
            return
        tolerance = max(TRUNCATION_TOLERANCE_S, 2.0 * info.interval)
        data_end = self.data_end
        if info.duration - data_end > tolerance:
            raise TruncatedVideo(
                f"truncated video: its data ends at {data_end:.2f} s but its headers declare "
                f"{info.duration:.2f} s (frames after the cut would repeat the last one): re-download or "
                "re-encode the file"
            )


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
        image_size: output side S in pixels (frames are turned upright, then resized to S x S).
        fps: sampling rate in frames per second (ignored when ``num_frames`` is given).
        num_frames: sample exactly this many frames uniformly over the window instead.
        max_frames: cap; more targets are uniformly subsampled down to this many.
        start, end: optional time window in seconds (clipped to the video).
        seek_threshold_s: seek instead of decoding forward when the next target is further ahead.
        threads: codec threads (1: none, the best choice inside DataLoader workers; 0: FFmpeg's choice).

    Returns:
        :class:`DecodedVideo` with frames (F, 3, S, S) uint8 and timestamps (F,) seconds.

    Raises:
        TruncatedVideo: decoding reached the end of the data well before the declared duration.
        DecodeError: the data is not a decodable video or yields no frame.
    """
    container = _open(source)
    try:
        info = _stream_info(container, threads)
        duration = info.duration
        t0 = max(start or 0.0, 0.0)
        t1 = duration if end is None else min(end, duration) if duration > 0 else end
        t0 = min(t0, t1) if duration > 0 else t0
        targets = sample_times(t0, t1, fps=fps, num_frames=num_frames, max_frames=max_frames)
        frames = _Frames(container, info)
        writer = _FrameWriter(len(targets), image_size, rotate_tag_turns(info.stream))
        num_decoded = _pick_frames(frames, info, targets, writer, seek_threshold_s)
        frames.check_complete()
    except (av.FFmpegError, EOFError) as exn:
        raise DecodeError(f"corrupt or truncated video: {exn}") from exn
    finally:
        container.close()
    pixels = torch.from_numpy(writer.out).permute(0, 3, 1, 2)  # (F, 3, S, S), channels-last memory
    stamps = torch.tensor(writer.times, dtype=torch.float32)  # (F,)
    window = max(t1 - t0, 1e-6)
    return DecodedVideo(
        frames=pixels,
        timestamps=stamps,
        duration=float(duration),
        fps=len(writer.times) / window,
        num_decoded=num_decoded,
        rotation=90 * (writer.turns or 0),
    )


def probe_video(source: bytes | str | Path) -> float:
    """Check that a video decodes from its first frame to its declared end; return its duration (s).

    Decodes the first frame, then seeks to the keyframe before the declared end and decodes from
    there to the end of the file (about one keyframe interval), so a cut file is caught cheaply.

    Raises:
        TruncatedVideo: the data ends well before the declared duration.
        DecodeError: the file is not a decodable video.
    """
    container = _open(source)
    try:
        info = _stream_info(container, threads=1)
        targets = [0.0, max(info.duration - 1e-3, 0.0)]  # the first frame and the one shown at the end
        frames = _Frames(container, info)
        _pick_frames(frames, info, targets, _FrameWriter(len(targets), 8, 0), seek_threshold_s=0.0)
        frames.check_complete()
    except (av.FFmpegError, EOFError) as exn:
        raise DecodeError(f"corrupt or truncated video: {exn}") from exn
    finally:
        container.close()
    return info.duration


class _FrameWriter:
    """Converts taken frames straight into one preallocated (F, S, S, 3) uint8 array, upright.

    Keeping per-frame arrays alive would defeat FFmpeg's buffer pool and cost a fresh allocation
    (page faults) per frame. The display rotation (the frame's display matrix, else the stream's
    ``rotate`` tag) is applied to the S x S output: the square resize scales each axis on its own
    and a quarter turn only swaps the axes, so this equals resizing the upright native frame."""

    def __init__(self, count: int, image_size: int, tag_turns: int) -> None:
        self.out = np.empty((count, image_size, image_size, 3), dtype=np.uint8)  # (F, S, S, 3)
        self.times: list[float] = []
        self.image_size, self.tag_turns = image_size, tag_turns
        self.turns: int | None = None  # counter-clockwise quarter turns, read from the first frame
        self._reformatter = VideoReformatter()  # one swscale context for the whole video
        self._last: tuple[Any, int] = (None, -1)  # a frame serving several targets is converted once

    def take(self, frame: Any, t: float) -> None:
        k = len(self.times)
        if self._last[0] is frame:
            self.out[k] = self.out[self._last[1]]
        else:
            self.out[k] = self._upright(frame)
            self._last = (frame, k)
        self.times.append(t)

    def _upright(self, frame: Any) -> np.ndarray:
        array = _to_array(frame, self.image_size, self._reformatter)  # (S, S, 3)
        if self.turns is None:
            rotation = frame.rotation
            self.turns = quarter_turns(rotation) if rotation else self.tag_turns
        return np.rot90(array, self.turns) if self.turns else array  # (S, S, 3)


def _frame_time(frame: Any, info: _StreamInfo, last_t: float) -> float:
    """Seconds from the first timestamp; without a timestamp, one nominal interval after the last."""
    if frame.pts is not None:
        return float((frame.pts - info.start_pts) * info.tb)
    return last_t + info.interval


def _pick_frames(
    frames: _Frames, info: _StreamInfo, targets: list[float], writer: _FrameWriter, seek_threshold_s: float
) -> int:
    """For each target time take the last frame with time <= target (the first frame if none);
    returns the number of frames decoded."""
    container, stream, tb = frames.container, info.stream, info.tb
    prev: Any = None
    prev_t = -math.inf
    keyframe_gap = 0.0  # largest keyframe interval seen so far (s)
    last_key_t: float | None = None
    i = 0
    last_t = -1.0
    decoded = 0
    sought = -1  # index of the last target sought: at most one seek per target, so no loop
    landing: float | None = None  # target of a seek whose first frame is not seen yet

    def seek_to(index: int) -> None:
        nonlocal sought, landing, last_key_t
        container.seek(int(targets[index] / tb) + info.start_pts, stream=stream, backward=True, any_frame=False)
        sought, landing, last_key_t = index, targets[index], None

    if targets[0] > seek_threshold_s:
        seek_to(0)
    while i < len(targets):
        restarted = False
        for frame in frames:
            decoded += 1
            t = last_t = _frame_time(frame, info, last_t)
            if landing is not None:  # a seek landing far before its target reveals sparse keyframes
                keyframe_gap, landing = max(keyframe_gap, landing - t), None
            if frame.key_frame:
                if last_key_t is not None and t > last_key_t:
                    keyframe_gap = max(keyframe_gap, t - last_key_t)
                last_key_t = t
            while i < len(targets) and t > targets[i]:
                writer.take(prev if prev is not None else frame, prev_t if prev is not None else t)
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
        writer.take(prev, prev_t)
        i += 1
    return decoded


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
