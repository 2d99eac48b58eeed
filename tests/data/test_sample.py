from __future__ import annotations

import json
from fractions import Fraction

import pytest

from datamodules.video import VideoDataModule
from lightning_viper.data.sample import BadSample, SampleDecoder, parse_annotation
from tests.data.fixtures import annotation, good_sample, grey_video, make_shards, truncated_webm


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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"answer": "B", "answer_index": 2}, r"sample 'k': mcq 'answer' 'B' names option B but 'answer_index' is 2"),
        ({"answer": "purple", "answer_index": 2}, r"sample 'k': mcq 'answer' 'purple' is neither an option letter"),
        ({"answer_index": True}, r"sample 'k': mcq 'answer_index' must be an integer"),
        ({"window": [5, "x"]}, r"sample 'k': annotation 'window' must be \[start_s, end_s\]"),
        ({"window": [3.0, 1.0]}, r"sample 'k': annotation 'window' \[3\.0, 1\.0\] ends before it starts"),
    ],
)
def test_annotation_errors_name_the_sample_and_the_key(fields: dict, message: str) -> None:
    with pytest.raises(BadSample, match=message):
        parse_annotation(annotation("mcq", **fields), key="k")


@pytest.mark.parametrize(
    ("answer", "index"), [("C", 2), ("c", 2), ("C.", 2), ("(C) blue", 2), ("blue", 2), ("C. blue", 2)]
)
def test_mcq_answer_forms_that_agree_with_the_index(answer: str, index: int) -> None:
    parsed = parse_annotation(annotation("mcq", answer=answer, answer_index=index), key="k")
    assert parsed["answer"] == "C" and parsed["answer_index"] == 2
    alone = json.loads(annotation("mcq", answer=answer))
    del alone["answer_index"]
    assert parse_annotation(json.dumps(alone).encode(), key="k")["answer_index"] == 2


@pytest.mark.parametrize(
    ("task", "fields", "message"),
    [
        ("mcq", {"window": [10.0, 70.0]}, r"sample 'k': annotation 'window' \[10\.0, 70\.0\] is outside the video"),
        ("mcq", {"window": [2.0, 9.0]}, r"annotation 'window' .* outside the video, which lasts 4\.00 s"),
        ("grounding", {"span": [3.0, 12.0]}, r"sample 'k': annotation 'span' \[3\.0, 12\.0\] is outside the video"),
        (
            "grounding",
            {"span": [-2.0, 1.0]},
            r"sample 'k': annotation 'span' .* starts before the video \(negative time\)",
        ),
    ],
)
def test_times_outside_the_video_are_rejected(task: str, fields: dict, message: str) -> None:
    decoder = SampleDecoder(image_size=16)
    with pytest.raises(BadSample, match=message):
        decoder({"__key__": "k", "mp4": grey_video(4), "json": annotation(task, **fields)})
    inside = {"window": [1.0, 4.5]} if task == "mcq" else {"span": [1.0, 4.5]}  # 0.5 s past the end: rounding
    assert decoder({"__key__": "k", "mp4": grey_video(4), "json": annotation(task, **inside)}).meta["num_frames"] >= 1


def test_dotted_key_gets_a_message_about_the_key() -> None:
    # what WebDataset hands over for members clip.v2.mp4 + clip.v2.json: key "clip", extension "v2.mp4"
    raw = {"__key__": "clip", "__url__": "s.tar", "v2.mp4": grey_video(2), "v2.json": annotation()}
    with pytest.raises(
        BadSample, match=r"sample 'clip': the member name clip\.v2\.(mp4|json) has a dot inside its key"
    ):
        SampleDecoder(image_size=16)(raw)
    with pytest.raises(BadSample, match=r"e\.g\. clip_v2\.mp4"):
        SampleDecoder(image_size=16)({"__key__": "clip", "json": annotation(), "v2.mp4": grey_video(2)})


def test_truncated_webm_is_a_bad_sample() -> None:
    with pytest.raises(BadSample, match=r"sample 'k': undecodable webm: truncated video"):
        SampleDecoder(image_size=16)({"__key__": "k", "webm": truncated_webm(), "json": annotation()})


def test_the_stream_skips_and_counts_bad_samples(tmp_path, demo_tokenizer_dir) -> None:
    bad = [
        ("dotted", {"v2.mp4": grey_video(3), "v2.json": annotation()}),
        ("cut", {"webm": truncated_webm(), "json": annotation()}),
        ("late", {"mp4": grey_video(3), "json": annotation("mcq", window=[10.0, 70.0])}),
        ("mismatch", {"mp4": grey_video(3), "json": annotation("mcq", answer="A", answer_index=2)}),
        ("span", {"mp4": grey_video(3), "json": annotation("grounding", span=[1.0, 30.0])}),
    ]
    make_shards(tmp_path, [[good_sample("first"), *bad, good_sample("last")]])
    dm = VideoDataModule(test=str(tmp_path / "shard-*.tar"), tokenizer=str(demo_tokenizer_dir), image_size=16)
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert [m["key"] for b in batches for m in b.meta] == ["first", "last"]
    assert sum(b.skipped for b in batches) == len(bad)
