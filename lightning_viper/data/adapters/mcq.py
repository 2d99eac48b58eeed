"""Multiple-choice benchmarks: each row -> one ``mcq`` sample, with the fields the test-time
breakdowns group by (``groups``: ``duration`` bucket, ``task`` type) carried along.

* ``videomme``: Video-MME's ``videomme/test-00000-of-00001.parquet`` rows ``{videoID, question_id,
  duration: short|medium|long, domain, sub_category, task_type, question, options: ["A. ...", ...],
  answer: "B"}``; media ``<videoID>``.
* ``mlvu``: MLVU dev ``json/<n>_<task>.json`` (e.g. ``1_plotQA.json``) rows ``{video, duration (s),
  question, candidates: [texts], answer: the right candidate's text, question_type}``; media
  ``<json file stem>/<video>`` (MEDIA_ROOT is MLVU's ``video/`` folder, whose sub-folders are
  named like the json files). Rows without ``candidates`` (the generation tasks ``8_sub_scene``,
  ``9_summary``) become ``caption`` samples with the answer as reference.
* ``longvideobench``: LongVideoBench ``lvb_val.json`` rows ``{id, video_path, question, candidates,
  correct_choice: index, duration_group: 15|60|600|3600, question_category, duration,
  subtitle_path?}``; media ``<video_path>``. ``lvb_test_wo_gt.json`` has no answers: its rows are
  reported as bad rows. ``longvideobench_subtitles`` also puts the video's subtitles (from the
  ``subtitles/`` folder next to the json, as in the release) before the question.
* ``lvbench``: LVBench ``video_info.meta.jsonl``, one line per video ``{key, qa: [{uid, question:
  "text\\n(A) ...\\n(B) ...", answer: "C", question_type: [..], time_reference: "00:15-00:19"}]}``;
  each question is a row (:func:`lvbench_rows`); media ``<key>``. ``question_type`` is a list: a
  question counts in every type it names (as LVBench's own scorer does).
* ``egoschema``: EgoSchema ``questions.json`` rows ``{q_uid, question, "option 0" .. "option 4"}``
  with answers ``{q_uid: index}`` from a separate file (``subset_answers.json``), or a row's own
  ``answer`` (index or letter); media ``<q_uid>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_viper.data.adapters.base import (
    BadRow,
    PackRecord,
    RowAdapter,
    as_object,
    load_json,
    mcq_annotation,
    need,
    record_key,
    seconds,
)
from lightning_viper.data.sample import OPTION_LETTERS
from lightning_viper.metrics.parsing import parse_time

_LVBENCH_OPTION = re.compile(r"^\(([A-Z])\)\s*(.*)$")


def _letter_index(answer: Any, num_options: int, format: str, field: str = "answer") -> int:
    """Index of an answer given as a letter ("B", "B.", "(B)") or an integer index."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str) and answer.strip().isdigit():  # an index written as text ("3")
        index = int(answer)
    else:
        text = str(answer).strip().strip("().").upper()
        if len(text) != 1 or text not in OPTION_LETTERS:
            raise BadRow(f"{format} row's {field!r} must be an option letter, got {answer!r}")
        index = OPTION_LETTERS.index(text)
    if not 0 <= index < num_options:
        raise BadRow(f"{format} row's {field!r} {answer!r} is not one of its {num_options} options")
    return index


def videomme(row: Any, i: int) -> list[PackRecord]:
    row = as_object(row, "videomme")
    vid = row.get("videoID") or row.get("video_id")
    if not vid:
        raise BadRow("videomme row needs 'videoID'")
    question = need(row, "question", str, "the question text", "videomme")
    options = need(row, "options", (list, tuple), 'a list ["A. ...", ...]', "videomme")
    index = _letter_index(need(row, "answer", str, "the right option's letter", "videomme"), len(options), "videomme")
    fields = {"duration": "duration", "domain": "domain", "sub_category": "sub_category", "task": "task_type"}
    groups = {name: row.get(field) for name, field in fields.items()}
    ann = mcq_annotation("videomme", question, options, index, groups)
    qid = row.get("question_id", f"{vid}_{i}")
    return [PackRecord(record_key(qid, f"{i:07d}"), str(vid), ann)]


def mlvu(folder: str) -> RowAdapter:
    """The MLVU adapter for rows of ``<folder>.json`` (their videos are in ``<folder>/``)."""

    def adapt(row: Any, i: int) -> list[PackRecord]:
        row = as_object(row, "mlvu")
        video = need(row, "video", str, "the video file name", "mlvu")
        question = need(row, "question", str, "the question text", "mlvu")
        task = need(row, "question_type", str, "the task type, e.g. plotQA", "mlvu")
        media, key = f"{folder}/{video}" if folder else video, record_key("mlvu", task, Path(video).stem, f"{i:07d}")
        if "candidates" not in row:  # MLVU's generation tasks (sub-scene captioning, summary)
            answer = need(row, "answer", str, "the reference text", "mlvu")
            ann = {
                "task": "caption",
                "question": question,
                "answer": answer,
                "source": "mlvu",
                "groups": {"task": task},
            }
            return [PackRecord(key, media, ann)]
        candidates = need(row, "candidates", list, "the option texts", "mlvu")
        answer = row.get("answer")
        texts = [str(c).strip() for c in candidates]
        if str(answer).strip() not in texts:
            raise BadRow(f"mlvu row's 'answer' {answer!r} is not one of its 'candidates' {texts}")
        ann = mcq_annotation("mlvu", question, texts, texts.index(str(answer).strip()), {"task": task})
        return [PackRecord(key, media, ann)]

    return adapt


def longvideobench(subtitles: Path | None = None) -> RowAdapter:
    """The LongVideoBench adapter; with ``subtitles`` (the release's ``subtitles/`` folder) each
    question is preceded by its video's subtitles (``longvideobench_subtitles``)."""

    def adapt(row: Any, i: int) -> list[PackRecord]:
        row = as_object(row, "longvideobench")
        video = need(row, "video_path", str, "the video file, e.g. 86CxyhFV9MI.mp4", "longvideobench")
        question = need(row, "question", str, "the question text", "longvideobench")
        candidates = need(row, "candidates", list, "the option texts", "longvideobench")
        if row.get("correct_choice") is None:
            raise BadRow(
                "longvideobench row has no 'correct_choice' (lvb_test_wo_gt.json has no answers: pack lvb_val.json)"
            )
        index = _letter_index(row["correct_choice"], len(candidates), "longvideobench", "correct_choice")
        if subtitles is not None:
            name = need(row, "subtitle_path", str, "the subtitle file under subtitles/", "longvideobench")
            offset = seconds(
                row.get("starting_timestamp_for_subtitles", 0), "starting_timestamp_for_subtitles", "longvideobench"
            )
            text = subtitle_text(subtitles / name, offset)
            question = f"Subtitles:\n{text}\n{question}" if text else question
        groups = {"duration": row.get("duration_group"), "task": row.get("question_category")}
        ann = mcq_annotation("longvideobench", question, candidates, index, groups)
        return [PackRecord(record_key("lvb", row.get("id", Path(video).stem), f"{i:07d}"), video, ann)]

    return adapt


def subtitle_text(path: Path, offset: float) -> str:
    """LongVideoBench subtitles (``[{start: "00:00:01.5", end, line}]`` or ``[{timestamp: [s, e],
    text}]``) as ``[12.0 s] text`` lines in time order, times from the video start (``offset``:
    the video's start in the subtitles' clock)."""
    if not path.is_file():
        raise BadRow(f"longvideobench subtitle file {str(path)!r} does not exist")
    entries = load_json(path)
    if not isinstance(entries, list):
        raise BadRow(f"longvideobench subtitle file {str(path)!r} is not a list of subtitles")
    lines = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not ("timestamp" in entry or "start" in entry):
            raise BadRow(f"{path} subtitle {n} needs 'start' + 'line' or 'timestamp' + 'text'")
        try:
            start = float(entry["timestamp"][0]) if "timestamp" in entry else parse_time(str(entry["start"]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise BadRow(f"{path} subtitle {n} has no readable start time") from None
        text = str(entry.get("text", entry.get("line", ""))).strip()
        if text:
            lines.append((max(0.0, start - offset), text))
    return "\n".join(f"[{start:.1f} s] {text}" for start, text in sorted(lines))


def lvbench_rows(videos: list[Any]) -> list[Any]:
    """One row per question of LVBench's per-video lines (the video's ``key`` added as ``video``);
    a line that is not a video object with a ``qa`` list stays one row (reported as bad)."""
    rows: list[Any] = []
    for video in videos:
        qa = video.get("qa") if isinstance(video, dict) else None
        if not isinstance(qa, list) or not qa:
            rows.append(video)
            continue
        rows.extend({**q, "video": video.get("key")} if isinstance(q, dict) else q for q in qa)
    return rows


def lvbench(row: Any, i: int) -> list[PackRecord]:
    row = as_object(row, "lvbench")
    if "qa" in row or "question" not in row:
        raise BadRow("lvbench line needs 'key' and a non-empty 'qa' list of {uid, question, answer, question_type}")
    video = need(row, "video", str, "the video key (the line's 'key')", "lvbench")
    lines = [
        line.strip() for line in need(row, "question", str, "the question with its options", "lvbench").split("\n")
    ]
    first = next((n for n, line in enumerate(lines) if _LVBENCH_OPTION.match(line)), None)
    if first is None:
        raise BadRow(
            "lvbench row's 'question' holds no options: expected lines '(A) ...', '(B) ...' after the question"
        )
    options = [m.group(2) for line in lines[first:] if line and (m := _LVBENCH_OPTION.match(line))]
    if len(options) != len([line for line in lines[first:] if line]):
        raise BadRow("lvbench row's 'question' has a line after the options that is not '(X) option'")
    index = _letter_index(need(row, "answer", str, "the right option's letter", "lvbench"), len(options), "lvbench")
    types = row.get("question_type")
    types = [str(t) for t in types] if isinstance(types, list) else types
    ann = mcq_annotation("lvbench", " ".join(lines[:first]), options, index, {"task": types})
    if row.get("time_reference"):
        ann["time_reference"] = str(row["time_reference"])
    return [PackRecord(record_key("lvbench", row.get("uid", video), f"{i:07d}"), video, ann)]


def egoschema(answers: Mapping[str, Any], answers_file: str | None) -> RowAdapter:
    """The EgoSchema adapter; ``answers`` maps ``q_uid`` to the right option's index."""

    def adapt(row: Any, i: int) -> list[PackRecord]:
        row = as_object(row, "egoschema")
        uid = need(row, "q_uid", str, "the question id, also the video's name", "egoschema")
        question = need(row, "question", str, "the question text", "egoschema")
        options = [row.get(f"option {n}") for n in range(len(OPTION_LETTERS)) if f"option {n}" in row]
        if not options or not all(isinstance(o, str) and o.strip() for o in options):
            raise BadRow("egoschema row needs texts in 'option 0', 'option 1', ...")
        answer = answers.get(uid, row.get("answer"))
        if answer is None:
            where = f"in {answers_file}" if answers_file else "(give the answers file: --answers subset_answers.json)"
            raise BadRow(f"egoschema row {uid!r} has no answer {where}")
        ann = mcq_annotation("egoschema", question, options, _letter_index(answer, len(options), "egoschema"))
        return [PackRecord(record_key("egoschema", uid, f"{i:07d}"), uid, ann)]

    return adapt
