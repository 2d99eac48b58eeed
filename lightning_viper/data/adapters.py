"""Annotation adapters: public data set schemas -> shard records (media file + our JSON).

* ``llava_video``: LLaVA-Video style rows ``{id?, video | image, conversations: [{from: human,
  value: "<image>\\n..."}, {from: gpt, value: ...}, ...]}`` -> task ``qa`` (first turn; the whole
  conversation is kept under ``conversations``). A row's own ``task`` field wins.
* ``videomme``: VideoMME style ``{videoID, question_id?, question, options: ["A. ...", ...],
  answer: "B", duration?}`` -> task ``mcq``.
* ``charades``: Charades-STA text lines ``"<vid> <start> <end>##<sentence>"``, or JSON rows
  ``{video | vid, start, end | timestamp: [s, e], sentence}``, or ``{vid: {timestamps: [[s, e], ...],
  sentences: [...]}}`` -> task ``grounding`` with ``span`` [start, end] seconds.

A malformed row (missing fields, a one-turn conversation, a line without an end time) is skipped and
reported with its position, id and reason (:func:`convert_rows`); it never stops the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_viper.data.shards import safe_key

log = logging.getLogger(__name__)

GROUNDING_QUESTION = 'When does "{sentence}" happen in the video?'


@dataclass
class PackRecord:
    """One sample to pack: ``media`` is a path relative to the media root (an extension may be
    missing: the packer tries the video extensions); ``annotation`` is the sample's JSON."""

    key: str
    media: str
    annotation: dict[str, Any] = field(default_factory=dict)


def _json_line(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exn:
        raise ValueError(f"{path} line {number} is not JSON ({exn}): fix or delete that line") from exn


def read_annotations(path: str | Path) -> list[Any]:
    """Rows of a .json (list, or dict of rows), .jsonl, .parquet or .txt (lines) annotation file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return [_json_line(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return [{"__id__": k, **v} if isinstance(v, dict) else {"__id__": k, "value": v} for k, v in data.items()]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows or an object of rows")
        return data
    if suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    raise ValueError(f"{path}: unsupported annotation format {suffix!r} (use .json, .jsonl, .parquet or .txt)")


class BadRow(ValueError):
    """An annotation row that cannot become a sample; the message says what the row lacks."""


def _row_id(row: Any) -> str | None:
    """The id a user can find the row by (its id / video / first word of a text line)."""
    if isinstance(row, dict):
        for name in ("id", "question_id", "videoID", "video_id", "video", "vid", "image", "__id__"):
            if row.get(name) is not None:
                return str(row[name])
        return None
    words = str(row).split()
    return words[0] if words else None


def llava_video(row: Any, i: int) -> list[PackRecord]:
    media = row.get("video") or row.get("image")
    convs = row.get("conversations") or []
    if not media:
        raise BadRow("llava_video row needs 'video' (or 'image')")
    if not isinstance(convs, list) or len(convs) < 2:
        raise BadRow(f"llava_video row needs >= 2 conversation turns (a question and an answer), got {len(convs)}")
    if not all(isinstance(c, dict) and "from" in c and "value" in c for c in convs):
        raise BadRow("llava_video row has a conversation turn without 'from' and 'value'")
    ann = {
        "task": row.get("task", "qa"),
        "conversations": [{"from": c["from"], "value": c["value"]} for c in convs],
        "source": row.get("data_source", "llava_video"),
    }
    return [PackRecord(safe_key(f"{row.get('id', Path(media).stem)}_{i:07d}"), str(media), ann)]


def videomme(row: Any, i: int) -> list[PackRecord]:
    vid, options, answer = row.get("videoID") or row.get("video_id"), row.get("options"), row.get("answer")
    if not vid or not isinstance(options, list | tuple) or not options or not answer or "question" not in row:
        raise BadRow("videomme row needs videoID, question, options [..] and answer")
    letter = str(answer).strip()[:1].upper()
    index = "ABCDEFGHIJ".find(letter)
    if not 0 <= index < len(options):
        raise BadRow(f"videomme row's answer {answer!r} is not the letter of one of its {len(options)} options")
    ann = {
        "task": "mcq",
        "question": str(row["question"]),
        "options": [str(o) for o in options],
        "answer": letter,
        "answer_index": index,
        "source": "videomme",
    }
    for extra in ("duration", "domain", "sub_category", "task_type"):
        if row.get(extra) is not None:
            ann[f"videomme_{extra}" if extra != "duration" else "duration_class"] = row[extra]
    qid = row.get("question_id", f"{vid}_{i}")
    return [PackRecord(safe_key(f"{qid}_{i:07d}"), str(vid), ann)]


def _grounding(vid: str, start: float, end: float, sentence: str, i: int) -> PackRecord:
    if not start <= end:
        raise BadRow(f"charades span [{start}, {end}] ends before it starts")
    ann = {
        "task": "grounding",
        "question": GROUNDING_QUESTION.format(sentence=sentence.strip().rstrip(".")),
        "answer": f"from {start:.1f} to {end:.1f} seconds",
        "span": [float(start), float(end)],
        "source": "charades",
    }
    return PackRecord(safe_key(f"{vid}_{i:07d}"), vid, ann)


def charades(row: Any, i: int) -> list[PackRecord]:
    """Records of one Charades row; ``i`` numbers the keys (the count of records so far)."""
    if isinstance(row, str):
        head, _, sentence = row.partition("##")
        parts = head.split()
        if len(parts) != 3 or not sentence.strip():
            raise BadRow("charades line is not '<vid> <start> <end>##<sentence>'")
        return [_grounding(parts[0], float(parts[1]), float(parts[2]), sentence, i)]
    if "timestamps" in row and "sentences" in row:
        pairs = zip(row["timestamps"], row["sentences"], strict=True)
        return [_grounding(str(row["__id__"]), float(s), float(e), t, i + j) for j, ((s, e), t) in enumerate(pairs)]
    vid = row.get("video") or row.get("vid") or row.get("__id__")
    if not vid or "sentence" not in row or not ("timestamp" in row or ("start" in row and "end" in row)):
        raise BadRow("charades row needs video (or vid), sentence and start + end (or timestamp [s, e])")
    start, end = row["timestamp"] if "timestamp" in row else (row["start"], row["end"])
    return [_grounding(str(vid), float(start), float(end), str(row["sentence"]), i)]


# format -> (row, index) -> records; index is the row's position (llava_video, videomme) or the
# number of records before it (charades, whose JSON rows may hold several sentences)
ADAPTERS: dict[str, Callable[[Any, int], list[PackRecord]]] = {
    "llava_video": llava_video,
    "videomme": videomme,
    "charades": charades,
}
_NUMBER_BY_RECORD = {"charades"}


def convert_rows(rows: list[Any], format: str) -> tuple[list[PackRecord], list[dict[str, Any]]]:
    """Records of every good row, and ``{"row", "id", "reason"}`` for every malformed one (``row``:
    0-based position among the file's rows; blank .txt lines are not rows)."""
    if format not in ADAPTERS:
        raise ValueError(f"unknown annotation format {format!r}: choose from {sorted(ADAPTERS)}")
    adapter = ADAPTERS[format]
    records: list[PackRecord] = []
    bad: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        try:
            if format != "charades" and not isinstance(row, dict):
                raise BadRow(f"{format} row is not an object")
            records.extend(adapter(row, len(records) if format in _NUMBER_BY_RECORD else i))
        except (BadRow, KeyError, TypeError, ValueError) as exn:  # malformed row data: skipped, reported
            reason = str(exn) if isinstance(exn, BadRow) else f"{type(exn).__name__}: {exn}"
            bad.append({"row": i, "id": _row_id(row), "reason": f"bad row: {reason}"})
            log.warning("skipping %s row %d (%s): %s", format, i, _row_id(row), reason)
    return records, bad


def load_records(annotations: str | Path, format: str) -> tuple[list[PackRecord], list[dict[str, Any]]]:
    """Read an annotation file and convert its rows with the adapter ``format``: the records, and
    the malformed rows skipped (see :func:`convert_rows`)."""
    if format not in ADAPTERS:
        raise ValueError(f"unknown annotation format {format!r}: choose from {sorted(ADAPTERS)}")
    return convert_rows(read_annotations(annotations), format)
