from __future__ import annotations

import io

import av
import numpy as np
import pytest

from lightning_viper.data.decode import (
    DecodeError,
    TruncatedVideo,
    decode_image,
    decode_video,
    probe_video,
    sample_times,
)
from lightning_viper.data.video_io import encode_video
from tests.data.fixtures import (
    bright_quadrant,
    grey_frames,
    grey_level,
    grey_video,
    quadrant_frames,
    truncated_webm,
)


def levels(frames) -> list[int]:
    return [int(f.float().mean()) for f in frames]


def assert_frames_are(frames, indices: list[int], tol: int = 6) -> None:
    got = levels(frames)
    want = [grey_level(i) for i in indices]
    assert all(abs(g - w) <= tol for g, w in zip(got, want, strict=True)), (got, want)


def test_fps_sampling_one_frame_per_second() -> None:
    video = decode_video(grey_video(16), image_size=16, fps=1.0)
    assert video.frames.shape == (16, 3, 16, 16)
    assert video.frames.dtype.is_floating_point is False
    assert video.timestamps.tolist() == [float(i) for i in range(16)]
    assert video.duration == pytest.approx(16.0)
    assert_frames_are(video.frames, list(range(16)))


def test_half_fps_takes_the_frame_on_screen_at_each_target() -> None:
    # targets at (i + 0.5) / 0.5 = 1, 3, 5, ... seconds
    video = decode_video(grey_video(16), image_size=16, fps=0.5)
    assert video.timestamps.tolist() == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    assert_frames_are(video.frames, [1, 3, 5, 7, 9, 11, 13, 15])


def test_num_frames_and_resize() -> None:
    video = decode_video(grey_video(16, size=32), image_size=8, num_frames=4)
    assert video.frames.shape == (4, 3, 8, 8)
    assert video.timestamps.tolist() == [2.0, 6.0, 10.0, 14.0]


def test_max_frames_caps_by_uniform_subsampling() -> None:
    video = decode_video(grey_video(16), image_size=16, fps=1.0, max_frames=5)
    expected = np.linspace(0, 15, 5).round().astype(int).tolist()  # [0, 4, 8, 11, 15]
    assert video.timestamps.tolist() == [float(i) for i in expected]
    assert_frames_are(video.frames, expected)
    assert video.fps == pytest.approx(5 / 16)


def test_time_window() -> None:
    video = decode_video(grey_video(16), image_size=16, fps=1.0, start=4.0, end=8.0)
    assert video.timestamps.tolist() == [4.0, 5.0, 6.0, 7.0]
    assert_frames_are(video.frames, [4, 5, 6, 7])


def test_video_shorter_than_requested() -> None:
    # 3 frames, 8 requested: frames repeat, no error
    video = decode_video(grey_video(3), image_size=16, num_frames=8)
    assert video.frames.shape[0] == 8
    assert sorted(set(video.timestamps.tolist())) == [0.0, 1.0, 2.0]
    # half a second of video at 1 fps: still one frame
    short = decode_video(encode_video(grey_frames(2), fps=4.0), image_size=16, fps=1.0)
    assert short.frames.shape[0] == 1
    # window past the end is clipped to the last frame
    late = decode_video(grey_video(4), image_size=16, fps=1.0, start=10.0, end=12.0)
    assert late.frames.shape[0] == 1
    assert late.timestamps.tolist() == [3.0]


def test_variable_frame_rate_uses_presentation_times() -> None:
    pts = [0.0, 0.1, 0.2, 1.5, 4.0, 4.1, 7.9]
    data = encode_video(grey_frames(len(pts)), pts=pts)
    video = decode_video(data, image_size=16, fps=1.0)
    targets = sample_times(0.0, video.duration, fps=1.0, num_frames=None, max_frames=None)
    # naive reference: the last frame whose pts <= target
    want = [max(i for i, p in enumerate(pts) if p <= t) for t in targets]
    assert video.timestamps.tolist() == pytest.approx([pts[i] for i in want], abs=1e-3)
    assert_frames_are(video.frames, want)


@pytest.mark.parametrize(
    ("codec", "gop", "max_decoded"),
    [("mpeg4", 10, 100), ("libx264", 10, 100), ("libx264", 250, 620)],  # sparse keyframes: no seek loop
)
def test_seeking_matches_sequential_decoding_on_a_long_video(codec: str, gop: int, max_decoded: int) -> None:
    data = encode_video(grey_frames(600, size=16), fps=1.0, gop=gop, codec=codec)
    seek = decode_video(data, image_size=16, fps=1.0, max_frames=8, seek_threshold_s=4.0)
    linear = decode_video(data, image_size=16, fps=1.0, max_frames=8, seek_threshold_s=1e9)
    expected = np.linspace(0, 599, 8).round().astype(int).tolist()
    assert seek.timestamps.tolist() == [float(i) for i in expected]
    assert linear.timestamps.tolist() == seek.timestamps.tolist()
    assert (seek.frames.int() - linear.frames.int()).abs().max() <= 2
    assert linear.num_decoded == 600
    assert seek.num_decoded < max_decoded  # about one keyframe interval per target
    assert_frames_are(seek.frames, expected)
    window = decode_video(data, image_size=16, fps=1.0, start=500.0, end=503.0)
    assert window.timestamps.tolist() == [500.0, 501.0, 502.0]


@pytest.mark.parametrize(("codec", "fmt"), [("mpeg4", "matroska"), ("mpeg4", "avi"), ("libvpx-vp9", "webm")])
def test_other_containers(codec: str, fmt: str) -> None:
    video = decode_video(grey_video(6, codec=codec, container_format=fmt), image_size=16, fps=1.0)
    assert video.frames.shape[0] == 6
    assert_frames_are(video.frames, list(range(6)))


def test_decode_from_path(tmp_path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(grey_video(5))
    assert decode_video(path, image_size=16).frames.shape[0] == 5


def test_image_decoding() -> None:
    import av

    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 20, 10, "rgb24"
    frame = av.VideoFrame.from_ndarray(np.full((10, 20, 3), 77, np.uint8), format="rgb24")
    png = bytes(ctx.encode(frame)[0])
    image = decode_image(png, image_size=16)
    assert image.frames.shape == (1, 3, 16, 16)
    assert int(image.frames.float().mean()) == 77
    assert image.timestamps.tolist() == [0.0]


def test_corrupt_and_truncated_videos_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_video(b"not a video at all" * 10, image_size=16)
    data = grey_video(8)
    with pytest.raises(DecodeError):
        decode_video(data[: len(data) // 2], image_size=16)
    with pytest.raises(DecodeError):
        decode_image(b"\x89PNG broken", image_size=16)


@pytest.mark.parametrize(("codec", "fmt"), [("mpeg4", "matroska"), ("libvpx-vp9", "webm")])
def test_matroska_start_offset_without_stream_duration(codec: str, fmt: str) -> None:
    # 5 frames shown at 2.5, 3.5, ..., 6.5 s: 5 s of video whose headers give no stream duration
    data = encode_video(grey_frames(5), pts=[2.5 + i for i in range(5)], codec=codec, container_format=fmt)
    with av.open(io.BytesIO(data)) as container:  # the case under test: no stream duration, offset start
        assert container.streams.video[0].duration is None
        assert container.streams.video[0].start_time == 2500
    video = decode_video(data, image_size=16, fps=1.0)
    assert video.duration == pytest.approx(5.0)
    assert video.timestamps.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # no frozen frames past the end
    assert_frames_are(video.frames, [0, 1, 2, 3, 4])
    assert probe_video(data) == pytest.approx(5.0)


def test_truncated_webm_raises_and_complete_one_does_not() -> None:
    whole = truncated_webm(keep=1.0)
    assert decode_video(whole, image_size=16).frames.shape[0] == 16
    assert probe_video(whole) == pytest.approx(16.0)
    cut = truncated_webm(keep=0.5)
    with av.open(io.BytesIO(cut)) as container:  # still opens and declares 16 s
        assert container.duration == 16 * av.time_base
    with pytest.raises(TruncatedVideo, match=r"truncated video: its data ends at \d+\.\d+ s .* declare 16\.00 s"):
        decode_video(cut, image_size=16, fps=1.0)
    with pytest.raises(TruncatedVideo, match="truncated video"):
        decode_video(cut, image_size=16, num_frames=4)  # seeks past the cut
    with pytest.raises(TruncatedVideo, match="truncated video"):
        probe_video(cut)
    early = decode_video(cut, image_size=16, fps=1.0, end=3.0)  # a window before the cut is intact
    assert early.timestamps.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("codec", "fmt", "kwargs", "upright", "turns"),
    [
        ("mpeg4", "mp4", {}, "top-left", 0),
        ("mpeg4", "mp4", {"rotation": -90}, "top-right", 3),  # phone filmed upright: turn clockwise
        ("libx264", "mov", {"rotation": 90}, "bottom-left", 1),
        ("mpeg4", "mp4", {"rotation": 180}, "bottom-right", 2),
        ("libvpx-vp9", "webm", {"rotation": -90}, "top-right", 3),
        ("mpeg4", "matroska", {"metadata": {"rotate": "90"}}, "top-right", 3),  # legacy tag: clockwise
        ("mpeg4", "matroska", {"metadata": {"rotate": "270"}}, "bottom-left", 1),
    ],
)
def test_display_rotation_is_applied(codec: str, fmt: str, kwargs: dict, upright: str, turns: int) -> None:
    source = quadrant_frames()  # (2, 32, 64, 3): landscape as stored, top-left quadrant bright
    data = encode_video(source, codec=codec, container_format=fmt, **kwargs)
    video = decode_video(data, image_size=32)
    assert [bright_quadrant(f) for f in video.frames] == [upright, upright]
    # independent reference: turn the native frame upright first, then area-resize it to 32 x 32
    native = np.rot90(source[0], turns).astype(np.float32)  # (H', W', 3), portrait when turned
    h, w = native.shape[0] // 32, native.shape[1] // 32
    reference = native.reshape(32, h, 32, w, 3).mean(axis=(1, 3))  # (32, 32, 3)
    got = video.frames[0].permute(1, 2, 0).float().numpy()  # (32, 32, 3)
    assert np.abs(got - reference).mean() < 6.0
    assert video.rotation == 90 * turns
