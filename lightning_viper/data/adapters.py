"""Annotation adapters: public data set schemas -> shard records (media file + our JSON).

* ``llava_video``: LLaVA-Video style rows ``{id?, video | image, conversations: [{from: human,
  value: "<image>\\n..."}, {from: gpt, value: ...}, ...]}`` -> task ``qa`` (first turn; the whole
  conversation is kept under ``conversations``). A row's own ``task`` field wins.
* ``videomme``: VideoMME style ``{videoID, question_id?, question, options: ["A. ...", ...],
  answer: "B", duration?}`` -> task ``mcq``.
* ``charades``: Charades-STA text lines ``"<vid> <start> <end>##<sentence>"``, or JSON rows
  ``{video | vid, start, end | timestamp: [s, e], sentence}``, or ``{vid: {timestamps: [[s, e], ...],
  sentences: [...]}}`` -> task ``grounding`` with ``span`` [start, end] seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_viper.data.shards import safe_key

GROUNDING_QUESTION = 'When does "{sentence}" happen in the video?'


@dataclass
class PackRecord:
    """One sample to pack: ``media`` is a path relative to the media root (an extension may be
    missing: the packer tries the video extensions); ``annotation`` is the sample's JSON."""

    key: str
    media: str
    annotation: dict[str, Any] = field(default_factory=dict)


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
        return [json.loads(line) for line in text.splitlines() if line.strip()]
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


def llava_video(rows: list[Any]) -> list[PackRecord]:
    out = []
    for i, row in enumerate(rows):
        media = row.get("video") or row.get("image")
        convs = row.get("conversations") or []
        if not media or len(convs) < 2:
            raise ValueError(f"llava_video row {i} needs 'video' (or 'image') and >= 2 conversation turns: {row!r}")
        ann = {
            "task": row.get("task", "qa"),
            "conversations": [{"from": c["from"], "value": c["value"]} for c in convs],
            "source": row.get("data_source", "llava_video"),
        }
        out.append(PackRecord(safe_key(f"{row.get('id', Path(media).stem)}_{i:07d}"), str(media), ann))
    return out


def videomme(rows: list[Any]) -> list[PackRecord]:
    out = []
    for i, row in enumerate(rows):
        vid, options, answer = row.get("videoID") or row.get("video_id"), row.get("options"), row.get("answer")
        if not vid or not isinstance(options, list | tuple) or not answer:
            raise ValueError(f"videomme row {i} needs videoID, options [..] and answer: {row!r}")
        letter = str(answer).strip()[:1].upper()
        ann = {
            "task": "mcq",
            "question": str(row["question"]),
            "options": [str(o) for o in options],
            "answer": letter,
            "answer_index": "ABCDEFGHIJ".find(letter),
            "source": "videomme",
        }
        for extra in ("duration", "domain", "sub_category", "task_type"):
            if row.get(extra) is not None:
                ann[f"videomme_{extra}" if extra != "duration" else "duration_class"] = row[extra]
        qid = row.get("question_id", f"{vid}_{i}")
        out.append(PackRecord(safe_key(f"{qid}_{i:07d}"), str(vid), ann))
    return out


def _grounding(vid: str, start: float, end: float, sentence: str, i: int) -> PackRecord:
    ann = {
        "task": "grounding",
        "question": GROUNDING_QUESTION.format(sentence=sentence.strip().rstrip(".")),
        "answer": f"from {start:.1f} to {end:.1f} seconds",
        "span": [float(start), float(end)],
        "source": "charades",
    }
    return PackRecord(safe_key(f"{vid}_{i:07d}"), vid, ann)


def charades(rows: list[Any]) -> list[PackRecord]:
    out: list[PackRecord] = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            head, _, sentence = row.partition("##")
            parts = head.split()
            if len(parts) != 3 or not sentence:
                raise ValueError(f"charades line {i} is not '<vid> <start> <end>##<sentence>': {row!r}")
            out.append(_grounding(parts[0], float(parts[1]), float(parts[2]), sentence, len(out)))
        elif "timestamps" in row and "sentences" in row:
            for (s, e), sentence in zip(row["timestamps"], row["sentences"], strict=True):
                out.append(_grounding(str(row["__id__"]), float(s), float(e), sentence, len(out)))
        else:
            vid = row.get("video") or row.get("vid") or row.get("__id__")
            start, end = row["timestamp"] if "timestamp" in row else (row["start"], row["end"])
            out.append(_grounding(str(vid), float(start), float(end), str(row["sentence"]), len(out)))
    return out


ADAPTERS: dict[str, Callable[[list[Any]], list[PackRecord]]] = {
    "llava_video": llava_video,
    "videomme": videomme,
    "charades": charades,
}


def load_records(annotations: str | Path, format: str) -> list[PackRecord]:
    """Read an annotation file and convert its rows with the adapter ``format``."""
    if format not in ADAPTERS:
        raise ValueError(f"unknown annotation format {format!r}: choose from {sorted(ADAPTERS)}")
    return ADAPTERS[format](read_annotations(annotations))
