from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jsonargparse import auto_cli

from datamodules.video import VideoDataModule
from lightning_viper.data.adapters import load_records
from lightning_viper.data.pack import pack
from tests.data.fixtures import grey_video, truncated_webm


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        (root / f"v{i}.mp4").write_bytes(grey_video(3 + i, size=16))
    (root / "sub" / "clip.mkv").write_bytes(grey_video(5, size=16, container_format="matroska"))
    (root / "empty.mp4").write_bytes(b"")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom garbage" * 4)
    return root


def read_back(out_dir: Path, tokenizer: Path) -> list[dict]:
    dm = VideoDataModule(test=str(out_dir / "shard-*.tar"), tokenizer=str(tokenizer), image_size=16, batch_size=2)
    dm.setup("test")
    return [
        m | {"label_ids": b.labels[i][b.labels[i] != -100].tolist()}
        for b in dm.test_dataloader()
        for i, m in enumerate(b.meta)
    ]


def test_llava_video_round_trip_with_skips(
    tmp_path: Path, media: Path, demo_tokenizer_dir: Path, demo_tokenizer
) -> None:
    def row(video: str, answer: str) -> dict:
        turns = [{"from": "human", "value": "<image>\nWhat colour was the star?"}, {"from": "gpt", "value": answer}]
        return {"id": f"id-{video}", "video": video, "conversations": turns}

    rows = [
        row("v0.mp4", "red"),
        row("sub/clip.mkv", "blue"),
        row("missing.mp4", "x"),
        row("empty.mp4", "x"),
        row("broken.mp4", "x"),
        row("v3.mp4", "green"),
    ]
    ann = tmp_path / "llava.json"
    ann.write_text(json.dumps(rows))
    out = tmp_path / "out"
    summary = pack(str(ann), str(media), str(out), "llava_video", shard_size_mb=0.001, workers=1)
    assert summary["num_written"] == 3 and summary["num_skipped"] == 3
    assert summary["skipped_by_reason"] == {"missing file": 1, "empty file": 1, "undecodable": 1}
    assert json.loads((out / "summary.json").read_text()) == summary
    assert len(summary["shards"]) >= 2  # the tiny target size forces several shards
    samples = read_back(out, demo_tokenizer_dir)
    assert [m["num_frames"] for m in samples] == [3, 5, 6]
    assert [m["answer"] for m in samples] == ["red", "blue", "green"]
    assert [demo_tokenizer.decode(m["label_ids"], skip_special_tokens=True) for m in samples] == [
        "red",
        "blue",
        "green",
    ]
    assert [m["duration"] for m in samples] == pytest.approx([3.0, 5.0, 6.0])


def test_pack_is_resumable(tmp_path: Path, media: Path) -> None:
    rows = [{"videoID": f"v{i}", "question": "Q?", "options": ["A. a", "B. b"], "answer": "B"} for i in range(4)]
    ann = tmp_path / "mme.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    first = pack(str(ann), str(media), str(out), "videomme", shard_size_mb=0.001, workers=1)
    before = {p: Path(p).read_bytes() for p in first["shards"]}
    again = pack(str(ann), str(media), str(out), "videomme", shard_size_mb=0.001, workers=1)
    assert again["resumed_shards"] == len(first["shards"]) and again["shards"] == first["shards"]
    victim = Path(first["shards"][1])
    victim.unlink()
    (out / "shard-000001.tar.tmp").write_bytes(b"half written")  # a crashed earlier attempt
    third = pack(str(ann), str(media), str(out), "videomme", shard_size_mb=0.001, workers=2)
    assert third["resumed_shards"] == len(first["shards"]) - 1
    assert {p: Path(p).read_bytes() for p in third["shards"]} == before


def test_videomme_parquet_round_trip(tmp_path: Path, media: Path, demo_tokenizer_dir: Path) -> None:
    rows = {
        "videoID": ["v1", "v2"],
        "question_id": ["001-1", "002-1"],
        "duration": ["short", "short"],
        "question": ["What colour was the star?", "How many times did the circle flash?"],
        "options": [["A. red", "B. green", "C. blue", "D. yellow"], ["A. 1", "B. 2", "C. 3", "D. 4"]],
        "answer": ["D", "B"],
    }
    ann = tmp_path / "mme.parquet"
    pq.write_table(pa.table(rows), ann)
    summary = pack(str(ann), str(media), str(tmp_path / "out"), "videomme", workers=1)
    assert summary["num_written"] == 2 and len(summary["shards"]) == 1
    samples = read_back(tmp_path / "out", demo_tokenizer_dir)
    assert [(m["task"], m["answer"], m["answer_index"], m["num_frames"]) for m in samples] == [
        ("mcq", "D", 3, 4),
        ("mcq", "B", 1, 5),
    ]


def test_charades_txt_and_json(tmp_path: Path, media: Path, demo_tokenizer_dir: Path) -> None:
    txt = tmp_path / "charades.txt"
    txt.write_text("v2 0.5 2.0##a person opens a door.\nv3 1.0 4.5##someone sits down\n")
    summary = pack(str(txt), str(media), str(tmp_path / "out"), "charades", workers=1)
    samples = read_back(tmp_path / "out", demo_tokenizer_dir)
    assert summary["num_written"] == 2
    assert [m["span"] for m in samples] == [[0.5, 2.0], [1.0, 4.5]]
    assert samples[0]["answer"] == "from 0.5 to 2.0 seconds" and samples[0]["task"] == "grounding"
    assert [m["num_frames"] for m in samples] == [5, 6]
    js = tmp_path / "charades.json"
    js.write_text(json.dumps({"v0": {"timestamps": [[0, 1], [1, 2]], "sentences": ["a", "b"]}}))
    records, bad = load_records(js, "charades")
    assert bad == []
    assert [(r.media, r.annotation["span"]) for r in records] == [("v0", [0.0, 1.0]), ("v0", [1.0, 2.0])]


def test_bad_format_and_missing_inputs(tmp_path: Path, media: Path) -> None:
    ann = tmp_path / "a.json"
    ann.write_text("[]")
    with pytest.raises(ValueError, match="unknown annotation format"):
        pack(str(ann), str(media), str(tmp_path / "o"), "kinetics", workers=1)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="media root"):
        pack(str(ann), str(tmp_path / "nope"), str(tmp_path / "o"), "videomme", workers=1)
    with pytest.raises(FileNotFoundError, match="annotation file"):
        pack(str(tmp_path / "x.json"), str(media), str(tmp_path / "o"), "videomme", workers=1)


def test_pack_check_skips_a_truncated_webm(tmp_path: Path, media: Path) -> None:
    (media / "cut.webm").write_bytes(truncated_webm())
    (media / "whole.webm").write_bytes(truncated_webm(keep=1.0))
    rows = [{"videoID": v, "question": "Q?", "options": ["A. a", "B. b"], "answer": "B"} for v in ("cut", "whole")]
    ann = tmp_path / "mme.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in rows))
    summary = pack(str(ann), str(media), str(tmp_path / "out"), "videomme", workers=1)
    assert summary["num_written"] == 1 and summary["num_skipped"] == 1
    assert summary["skipped_by_reason"] == {"truncated video": 1}
    (skip,) = summary["skipped"]
    assert skip["media"] == "cut" and "declare 16.00 s" in skip["reason"]


def test_pack_skips_and_lists_malformed_rows(tmp_path: Path, media: Path) -> None:
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "red"}]
    rows = [
        {"id": "good", "video": "v0.mp4", "conversations": turns},
        {"id": "one-turn", "video": "v1.mp4", "conversations": turns[:1]},
        {"id": "no-video", "conversations": turns},
        {"id": "good2", "video": "v2.mp4", "conversations": turns},
    ]
    ann = tmp_path / "llava.json"
    ann.write_text(json.dumps(rows))
    summary = pack(str(ann), str(media), str(tmp_path / "llava"), "llava_video", workers=1)
    assert summary["num_written"] == 2 and summary["num_bad_rows"] == 2 and summary["num_skipped"] == 2
    assert [(s["row"], s["id"]) for s in summary["skipped"]] == [(1, "one-turn"), (2, "no-video")]
    assert "needs >= 2 conversation turns" in summary["skipped"][0]["reason"]
    assert summary["skipped_by_reason"] == {"bad row": 2}
    txt = tmp_path / "charades.txt"
    txt.write_text("v2 0.5 2.0##a person opens a door.\nv3 1.0##no end time\nv3 x 2##not a number\nv3 1 2##ok\n")
    summary = pack(str(txt), str(media), str(tmp_path / "charades"), "charades", workers=1)
    assert summary["num_written"] == 2 and summary["num_bad_rows"] == 2
    assert [(s["row"], s["id"]) for s in summary["skipped"]] == [(1, "v3"), (2, "v3")]
    assert "is not '<vid> <start> <end>##<sentence>'" in summary["skipped"][0]["reason"]


def test_pack_skips_annotations_the_reader_would_reject(tmp_path: Path, media: Path) -> None:
    txt = tmp_path / "charades.txt"
    txt.write_text("v2 0.5 2.0##inside\nv2 1.0 40.0##past the end of a 5 s video\n")
    summary = pack(str(txt), str(media), str(tmp_path / "out"), "charades", workers=1)
    assert summary["num_written"] == 1 and summary["skipped_by_reason"] == {"bad annotation": 1}
    assert "annotation 'span' [1.0, 40.0] is outside the video" in summary["skipped"][0]["reason"]


def test_viper_usage_text_matches_the_pack_signature(tmp_path: Path, media: Path) -> None:
    from lightning_viper.cli import viper

    doc = viper.__doc__ or ""
    start = doc.index("viper pack")
    usage = doc[start : doc.index("\nviper ", start + 1)]  # the pack entry, continuation lines included
    required = [n for n, p in inspect.signature(pack).parameters.items() if p.default is inspect.Parameter.empty]
    optional = [n for n in inspect.signature(pack).parameters if n not in required]
    positionals = usage.split("[", 1)[0].split()[2:]
    assert len(positionals) == len(required), (positionals, required)
    assert set(re.findall(r"--(\w+)", usage)) <= set(optional)
    ann = tmp_path / "mme.jsonl"
    ann.write_text(json.dumps({"videoID": "v1", "question": "Q?", "options": ["A. a", "B. b"], "answer": "B"}))
    args = ["pack", str(ann), str(media), str(tmp_path / "out"), "videomme", "--workers", "1", "--limit", "1"]
    auto_cli({"pack": pack}, args=args, as_positional=True)  # how viper.main parses it
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_written"] == 1
