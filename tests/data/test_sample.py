from __future__ import annotations

import json
from fractions import Fraction

import pytest

from lightning_viper.data.sample import BadSample, SampleDecoder, parse_annotation
from tests.data.fixtures import annotation, grey_video


def test_mcq_question_lists_options_and_answer_is_a_letter() -> None:
    sample = SampleDecoder(image_size=16)({"__key__": "k", "mp4": grey_video(4), "json": annotation("mcq")})
    assert sample.answer == "C" and sample.meta["answer_index"] == 2
    assert sample.prompt_text.splitlines()[1:5] == ["A. red", "B. green", "C. blue", "D. yellow"]
    assert sample.meta["num_frames"] == 4 and sample.meta["timestamps"] == [0.0, 1.0, 2.0, 3.0]


def test_grounding_question_states_length_and_frames() -> None:
    decoder = SampleDecoder(image_size=16, max_frames=2)
    sample = decoder({"__key__": "k", "mp4": grey_video(8), "json": annotation("grounding")})
    assert sample.prompt_text.startswith("The video lasts 8 seconds and 2 frames were sampled.")
    assert sample.meta["span"] == [1.0, 3.0]


def test_conversations_fill_question_and_answer() -> None:
    ann = {"task": "qa", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "X"}]}
    parsed = parse_annotation(json.dumps(ann).encode())
    assert parsed["question"] == "What?" and parsed["answer"] == "X"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad JSON"),
        (annotation("mcq", answer_index=7, answer="H"), "out of range"),
        (annotation("summarise"), "bad task"),
        (annotation("grounding", span=[5, 1]), "ends before"),
        (annotation("qa", answer=""), "missing answer"),
    ],
)
def test_bad_annotations(raw: bytes, reason: str) -> None:
    with pytest.raises(BadSample, match=reason):
        parse_annotation(raw)


def test_missing_members_and_pickles_are_not_decoded() -> None:
    decoder = SampleDecoder(image_size=16)
    with pytest.raises(BadSample, match=r"missing \.json"):
        decoder({"__key__": "k", "mp4": grey_video(2)})
    with pytest.raises(BadSample, match="missing media"):
        decoder({"__key__": "k", "json": annotation(), "pyd": b"\x80\x04pickle", "pth": b"x"})
    with pytest.raises(BadSample, match="undecodable mp4"):
        decoder({"__key__": "k", "json": annotation(), "mp4": b"garbage"})


@pytest.mark.parametrize(("codec", "ext", "pix_fmt"), [("png", "png", "rgb24"), ("mjpeg", "jpg", "yuvj420p")])
def test_image_text_sample_is_one_frame(codec: str, ext: str, pix_fmt: str) -> None:
    import av
    import numpy as np

    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 24, 16, pix_fmt
    ctx.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.full((16, 24, 3), 120, np.uint8), format="rgb24").reformat(format=pix_fmt)
    image = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    raw = {"__key__": "img", ext: image, "json": annotation("caption", question="Describe the image.", answer="grey")}
    sample = SampleDecoder(image_size=8)(raw)
    assert sample.frames.shape == (1, 3, 8, 8) and abs(int(sample.frames.float().mean()) - 120) <= 3
    assert sample.meta["num_frames"] == 1 and sample.meta["duration"] == 0.0
