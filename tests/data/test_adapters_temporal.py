"""Dense-caption and TimeViper dataset-list adapters on hand-made files in the published layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.video import VideoDataModule
from lightning_viper.data.adapters import load_records
from lightning_viper.data.pack import pack
from tests.data.fixtures import grey_video


def _video(path: Path, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(grey_video(frames, size=16))


def _read_back(out_dir: Path, tokenizer: Path) -> list[dict]:
    dm = VideoDataModule(test=str(out_dir / "shard-*.tar"), tokenizer=str(tokenizer), image_size=16, batch_size=1)
    dm.setup("test")
    return [m for b in dm.test_dataloader() for m in b.meta]


def test_activitynet_captions(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    ann = tmp_path / "val_1.json"
    data = {
        "v_good": {"duration": 6.0, "timestamps": [[3.0, 5.5], [0.0, 2.5]], "sentences": ["B jumps.", " A runs"]},
        "v_mismatch": {"duration": 6.0, "timestamps": [[0, 1]], "sentences": ["a", "b"]},
        "v_late": {"duration": 6.0, "timestamps": [[0, 40]], "sentences": ["too long"]},
        "v_text": {"duration": 6.0, "timestamps": [["x", 2]], "sentences": ["a"]},
    }
    ann.write_text(json.dumps(data))
    records, bad = load_records(ann, "activitynet_captions")
    (rec,) = records
    assert rec.media == "v_good" and rec.annotation["task"] == "caption" and rec.annotation["duration"] == 6.0
    assert rec.annotation["answer"] == "0.0 - 2.5 seconds, A runs.\n3.0 - 5.5 seconds, B jumps."  # in time order
    assert [(b["row"], b["id"]) for b in bad] == [(1, "v_mismatch"), (2, "v_late"), (3, "v_text")]
    assert "1 'timestamps' but 2 'sentences'" in bad[0]["reason"]
    assert "does not hold its events" in bad[1]["reason"]
    assert "'timestamps[0]' must be seconds" in bad[2]["reason"]
    _video(tmp_path / "videos" / "v_good.mp4", 6)
    assert (
        pack(str(ann), str(tmp_path / "videos"), str(tmp_path / "out"), "activitynet_captions", workers=1)[
            "num_written"
        ]
        == 1
    )
    (meta,) = _read_back(tmp_path / "out", demo_tokenizer_dir)
    assert meta["task"] == "caption" and meta["answer"].startswith("0.0 - 2.5 seconds")


def test_youcook2_database_layout(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    ann = tmp_path / "youcookii_annotations_trainval.json"
    database = {
        "GLd3aX16zBg": {
            "duration": 5.0,
            "subset": "training",
            "recipe_type": "113",
            "video_url": "https://example.invalid/x",
            "annotations": [
                {"segment": [1, 2], "id": 0, "sentence": "spread margarine on bread"},
                {"segment": [3, 4], "id": 1, "sentence": "place a slice of cheese"},
            ],
        },
        "broken": {"duration": 5.0, "subset": "validation", "recipe_type": "201", "annotations": [{"id": 0}]},
    }
    ann.write_text(json.dumps({"database": database}))
    records, bad = load_records(ann, "youcook2")
    (rec,) = records
    assert rec.media == "training/113/GLd3aX16zBg"
    assert rec.annotation["answer"].splitlines() == [
        "1.0 - 2.0 seconds, spread margarine on bread.",
        "3.0 - 4.0 seconds, place a slice of cheese.",
    ]
    assert bad[0]["id"] == "broken" and "'annotations[0].segment' must be [start_s, end_s]" in bad[0]["reason"]
    _video(tmp_path / "raw_videos" / "training" / "113" / "GLd3aX16zBg.mp4", 5)
    summary = pack(str(ann), str(tmp_path / "raw_videos"), str(tmp_path / "out"), "youcook2", workers=1)
    assert summary["num_written"] == 1 and summary["num_bad_rows"] == 1
    ann.write_text(json.dumps(database))
    with pytest.raises(ValueError, match="'database'"):
        load_records(ann, "youcook2")


def test_timeviper_dataset_list(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    turns = [{"from": "human", "value": "<image>\nWhat colour is the car?"}, {"from": "gpt", "value": "red"}]
    (data / "conv.json").write_text(json.dumps([{"id": "c1", "image": "c1.mp4", "conversations": turns}]))
    (data / "cap.jsonl").write_text(
        "\n".join(json.dumps({"image": f"cap{i}.mp4", "caption": f"caption {i}"}) for i in range(3))
    )
    tvg = [
        {
            "image": "g1.mp4",
            "duration": 5.0,
            "conversations": [
                {"from": "human", "value": "<image>\nthe person opens the door"},
                {"from": "gpt", "value": "1.5 to 3.0 seconds"},
            ],
        },
        {
            "image": "g2.mp4",
            "duration": 5.0,
            "conversations": [{"from": "human", "value": "a query"}, {"from": "gpt", "value": "no idea"}],
        },
    ]
    (data / "tvg.json").write_text(json.dumps(tvg))
    dvc = [
        {
            "image": "d1.mp4",
            "duration": 5.0,
            "conversations": [
                {"from": "human", "value": "<image>\nList the events with times."},
                {"from": "gpt", "value": "0.0 - 2.0 seconds, a man talks. 2.0 - 5.0 seconds, he cooks."},
            ],
        }
    ]
    (data / "dvc.json").write_text(json.dumps(dvc))
    config = tmp_path / "timeviper_data.yaml"
    config.write_text(
        "data:\n"
        "  - {json_path: data/conv.json, data_path: conv, format: conversation, dataset_type: video}\n"
        "  - {json_path: data/cap.jsonl, data_path: cap, format: caption_packed, max_size: 2, pack_size: 2}\n"
        "  - {json_path: data/tvg.json, data_path: tvg, format: tvg, split: val}\n"
        "  - {json_path: data/dvc.json, data_path: dvc, format: dvc}\n"
    )
    records, bad = load_records(config, "timeviper")
    assert [(r.media, r.annotation["task"]) for r in records] == [
        ("conv/c1.mp4", "qa"),
        ("cap/cap0.mp4", "caption"),
        ("cap/cap1.mp4", "caption"),
        ("tvg/g1.mp4", "grounding"),
        ("dvc/d1.mp4", "caption"),
    ]
    grounding = records[3].annotation
    assert grounding["span"] == [1.5, 3.0] and grounding["question"] == "the person opens the door"
    assert records[4].annotation["question"] == "List the events with times."
    (row,) = bad
    assert row["file"] == str(data / "tvg.json") and row["row"] == 1 and "holds no time span" in row["reason"]

    media = tmp_path / "media"
    for name in ("conv/c1", "cap/cap0", "cap/cap1", "tvg/g1", "dvc/d1"):
        _video(media / f"{name}.mp4", 5)
    summary = pack(str(config), str(media), str(tmp_path / "out"), "timeviper", workers=1)
    assert summary["num_written"] == 5 and summary["num_bad_rows"] == 1
    metas = _read_back(tmp_path / "out", demo_tokenizer_dir)
    assert [m["task"] for m in metas] == ["qa", "caption", "caption", "grounding", "caption"]
    assert metas[3]["span"] == [1.5, 3.0] and metas[0]["answer"] == "red"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("data: []\n", "a TimeViper dataset list holds"),
        ("data:\n  - {json_path: a.json, format: tvg}\n", r"data entry 0 lacks \['data_path'\]"),
        ("data:\n  - {json_path: a.json, data_path: v, format: vqa}\n", "format 'vqa'; expected one of"),
        ("data:\n  - {json_path: a.csv, data_path: v, format: tvg}\n", "must be a .json or .jsonl file"),
        ("data:\n  - {json_path: nope.json, data_path: v, format: tvg}\n", "does not exist"),
    ],
)
def test_timeviper_dataset_list_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    config = tmp_path / "list.yaml"
    config.write_text(yaml_text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_records(config, "timeviper")
