"""MCQ benchmark adapters on small hand-made files in each benchmark's published layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.video import VideoDataModule
from lightning_viper.data.adapters import load_records
from lightning_viper.data.pack import pack
from lightning_viper.data.sample import BadSample, parse_annotation
from tests.data.fixtures import grey_video


def _videos(root: Path, names: list[str], frames: int = 3) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(grey_video(frames, size=16))
    return root


def _read_back(out_dir: Path, tokenizer: Path) -> list[dict]:
    dm = VideoDataModule(test=str(out_dir / "shard-*.tar"), tokenizer=str(tokenizer), image_size=16, batch_size=2)
    dm.setup("test")
    return [m for b in dm.test_dataloader() for m in b.meta]


def test_mlvu_json_folder(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    # MLVU dev: json/<n>_<task>.json, videos in video/<n>_<task>/
    mlvu = tmp_path / "MLVU"
    (mlvu / "json").mkdir(parents=True)
    plot = [
        {
            "video": "a.mp4",
            "duration": 3.0,
            "question": "Who opens the door?",
            "candidates": ["the cat", "the dog"],
            "answer": "the dog",
            "question_type": "plotQA",
        },
        {
            "video": "b.mp4",
            "duration": 3.0,
            "question": "Q?",
            "candidates": ["x", "y"],
            "answer": "z",
            "question_type": "plotQA",
        },
    ]
    count = [
        {
            "video": "c.mp4",
            "duration": 3.0,
            "question": "How many jumps?",
            "candidates": ["1", "2", "3"],
            "answer": "3",
            "question_type": "count",
        }
    ]
    summary = [
        {
            "video": "d.mp4",
            "duration": 3.0,
            "question": "Summarize the video.",
            "answer": "A dog plays.",
            "question_type": "summary",
        }
    ]
    for name, rows in (("1_plotQA", plot), ("4_count", count), ("9_summary", summary)):
        (mlvu / "json" / f"{name}.json").write_text(json.dumps(rows))
    records, bad = load_records(mlvu / "json", "mlvu")
    assert [r.media for r in records] == ["1_plotQA/a.mp4", "4_count/c.mp4", "9_summary/d.mp4"]
    mcq = records[0].annotation
    assert (mcq["task"], mcq["options"], mcq["answer"], mcq["answer_index"]) == ("mcq", ["the cat", "the dog"], "B", 1)
    assert mcq["groups"] == {"task": "plotQA"} and records[1].annotation["groups"] == {"task": "count"}
    assert records[2].annotation | {"source": None} == {
        "task": "caption",
        "question": "Summarize the video.",
        "answer": "A dog plays.",
        "groups": {"task": "summary"},
        "source": None,
    }
    (row,) = bad
    assert row["file"].endswith("1_plotQA.json") and row["row"] == 1 and row["id"] == "b.mp4"
    assert "'answer' 'z' is not one of its 'candidates'" in row["reason"]

    _videos(mlvu / "video", ["1_plotQA/a.mp4", "1_plotQA/b.mp4", "4_count/c.mp4", "9_summary/d.mp4"])
    result = pack(str(mlvu / "json"), str(mlvu / "video"), str(tmp_path / "out"), "mlvu", workers=1)
    assert result["num_written"] == 3 and result["num_bad_rows"] == 1 and result["skipped_by_reason"] == {"bad row": 1}
    metas = _read_back(tmp_path / "out", demo_tokenizer_dir)
    assert [(m["task"], m["answer"]) for m in metas] == [("mcq", "B"), ("mcq", "C"), ("caption", "A dog plays.")]


def test_longvideobench_val(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    def row(i: int, **fields: object) -> dict:
        base = {
            "id": f"q{i}",
            "video_id": f"vid{i}",
            "video_path": f"vid{i}.mp4",
            "question": f"Question {i}?",
            "candidates": ["red", "green", "blue", "pink"],
            "correct_choice": 2,
            "duration_group": 15,
            "question_category": "S2E",
            "duration": 3.0,
            "subtitle_path": f"vid{i}_en.json",
            "starting_timestamp_for_subtitles": 0,
            "level": "L1-Perception",
        }
        return base | fields

    rows = [
        row(0),
        row(1, duration_group=600, question_category="T3O", correct_choice=0),
        row(2, correct_choice=None),
        row(3, correct_choice=7),
    ]
    ann = tmp_path / "lvb_val.json"
    ann.write_text(json.dumps(rows))
    records, bad = load_records(ann, "longvideobench")
    assert [(r.media, r.annotation["answer"], r.annotation["groups"]) for r in records] == [
        ("vid0.mp4", "C", {"duration": "15", "task": "S2E"}),
        ("vid1.mp4", "A", {"duration": "600", "task": "T3O"}),
    ]
    assert [(b["row"], b["id"]) for b in bad] == [(2, "q2"), (3, "q3")]
    assert "no 'correct_choice'" in bad[0]["reason"] and "pack lvb_val.json" in bad[0]["reason"]
    assert "'correct_choice' 7 is not one of its 4 options" in bad[1]["reason"]
    media = _videos(tmp_path / "videos", ["vid0.mp4", "vid1.mp4"])
    assert pack(str(ann), str(media), str(tmp_path / "out"), "longvideobench", workers=1)["num_written"] == 2
    metas = _read_back(tmp_path / "out", demo_tokenizer_dir)
    assert [m["answer_index"] for m in metas] == [2, 0]
    assert [m["groups"] for m in metas] == [{"duration": "15", "task": "S2E"}, {"duration": "600", "task": "T3O"}]


@pytest.mark.parametrize("groups", [["short"], {"task": 3}, {"task": ["a", 1]}])
def test_the_reader_rejects_malformed_groups(groups: object) -> None:
    raw = json.dumps({"task": "mcq", "question": "Q?", "options": ["a", "b"], "answer": "A", "groups": groups})
    with pytest.raises(BadSample, match="sample 'k': annotation 'groups' must map names to a string or a list"):
        parse_annotation(raw.encode(), "k")


def test_lvbench_meta_jsonl(tmp_path: Path) -> None:
    def qa(uid: int, question: str, answer: str = "B", types: list[str] | None = None) -> dict:
        return {
            "uid": uid,
            "question": question,
            "answer": answer,
            "question_type": types or ["key information retrieval"],
            "time_reference": "00:01-00:02",
        }

    lines = [
        {
            "key": "vidA",
            "type": "documentary",
            "qa": [
                qa(
                    1,
                    "What is on the table?\n(A) a cup\n(B) a book\n(C) a phone\n(D) a key",
                    "B",
                    ["entity recognition", "key information retrieval"],
                ),
                qa(2, "What happens first?", "A"),
            ],
        },
        {"key": "vidB", "qa": [qa(3, "Who speaks?\n(A) the host\n(B) a guest", "A")]},
        {"key": "vidC", "qa": []},
    ]
    ann = tmp_path / "video_info.meta.jsonl"
    ann.write_text("\n".join(json.dumps(line) for line in lines))
    records, bad = load_records(ann, "lvbench")
    first = records[0].annotation
    assert records[0].media == "vidA" and records[1].media == "vidB"
    assert first["question"] == "What is on the table?" and first["options"] == ["a cup", "a book", "a phone", "a key"]
    assert (first["answer"], first["answer_index"], first["time_reference"]) == ("B", 1, "00:01-00:02")
    assert first["groups"] == {"task": ["entity recognition", "key information retrieval"]}
    assert [(b["row"], b["id"]) for b in bad] == [(1, "2"), (3, "vidC")]
    assert "holds no options" in bad[0]["reason"] and "non-empty 'qa' list" in bad[1]["reason"]


def test_egoschema_with_separate_answers(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    def question(uid: str) -> dict:
        return {
            "q_uid": uid,
            "google_drive_id": "x",
            "question": f"What is c doing in {uid}?",
            **{f"option {n}": f"choice {n}" for n in range(5)},
        }

    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps([question("u1"), question("u2"), question("u3")]))
    answers = tmp_path / "subset_answers.json"
    answers.write_text(json.dumps({"u1": 3, "u2": 0}))
    records, bad = load_records(questions, "egoschema", str(answers))
    assert [(r.media, r.annotation["answer"], len(r.annotation["options"])) for r in records] == [
        ("u1", "D", 5),
        ("u2", "A", 5),
    ]
    (missing,) = bad
    assert missing["row"] == 2 and missing["id"] == "u3" and str(answers) in missing["reason"]
    _, none = load_records(questions, "egoschema")
    assert len(none) == 3 and "--answers subset_answers.json" in none[0]["reason"]
    media = _videos(tmp_path / "videos", ["u1.mp4", "u2.mp4"])
    out = tmp_path / "out"
    assert pack(str(questions), str(media), str(out), "egoschema", workers=1, answers=str(answers))["num_written"] == 2
    assert [m["answer_index"] for m in _read_back(out, demo_tokenizer_dir)] == [3, 0]


def test_videomme_groups_and_field_errors(tmp_path: Path) -> None:
    rows = [
        {
            "videoID": "v1",
            "question_id": "001-1",
            "duration": "short",
            "domain": "Knowledge",
            "sub_category": "Humanity",
            "task_type": "Counting Problem",
            "question": "How many?",
            "options": ["A. 1", "B. 2"],
            "answer": "B",
        },
        {"videoID": "v2", "question": "Q?", "options": "A. 1", "answer": "A"},
    ]
    ann = tmp_path / "videomme.json"
    ann.write_text(json.dumps(rows))
    records, bad = load_records(ann, "videomme")
    assert records[0].annotation["groups"] == {
        "duration": "short",
        "domain": "Knowledge",
        "sub_category": "Humanity",
        "task": "Counting Problem",
    }
    assert bad[0]["row"] == 1 and "needs 'options'" in bad[0]["reason"] and bad[0]["file"] == str(ann)


def test_unknown_format_lists_every_format(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    ann.write_text("[]")
    with pytest.raises(ValueError, match=r"egoschema.*lvbench.*mlvu"):
        load_records(ann, "kinetics")


def test_longvideobench_with_subtitles(tmp_path: Path) -> None:
    release = tmp_path / "LongVideoBench"
    (release / "subtitles").mkdir(parents=True)
    row = {
        "id": "q0",
        "video_path": "vid0.mp4",
        "question": "What does the host say first?",
        "candidates": ["hello", "bye"],
        "correct_choice": 0,
        "duration_group": 60,
        "question_category": "S2E",
        "subtitle_path": "vid0_en.json",
        "starting_timestamp_for_subtitles": 10.0,
    }
    (release / "subtitles" / "vid0_en.json").write_text(
        json.dumps(
            [
                {"start": "00:00:14.500", "end": "00:00:16.000", "line": "and goodbye"},
                {"start": "00:00:11.000", "end": "00:00:12.000", "line": "hello everyone"},
            ]
        )
    )
    missing = row | {"id": "q1", "subtitle_path": "nope.json"}
    (release / "lvb_val.json").write_text(json.dumps([row, missing]))
    records, bad = load_records(release / "lvb_val.json", "longvideobench_subtitles")
    assert records[0].annotation["question"] == (
        "Subtitles:\n[1.0 s] hello everyone\n[4.5 s] and goodbye\nWhat does the host say first?"
    )
    assert bad[0]["id"] == "q1" and "nope.json' does not exist" in bad[0]["reason"]
    plain, _ = load_records(release / "lvb_val.json", "longvideobench")
    assert plain[0].annotation["question"] == "What does the host say first?"  # subtitles only when asked
