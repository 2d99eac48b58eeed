"""TimeViper's own dataset list: a YAML file naming annotation files and their media folders.

The layout follows the TimeViper reference code (its ``data_config_file``)::

    data:
      - {json_path: data/llava_video.json, data_path: videos/llava, format: conversation}
      - {json_path: data/vdc.jsonl, data_path: videos/vdc, format: caption, max_size: 1000}
      - {json_path: data/charades_tvg.json, data_path: videos/charades, format: tvg}
      - {json_path: data/anet_dvc.json, data_path: videos/anet, format: dvc}

``format``'s part before the first ``_`` picks the reader (``conversation_packed`` reads as
``conversation``); ``max_size`` keeps the first N items; ``split``, ``dataset_type`` and packing
options are TimeViper's training settings and are ignored here. ``json_path`` is a .json list or a
.jsonl file, relative to the YAML's folder unless absolute; ``data_path`` is the media folder,
relative to MEDIA_ROOT unless absolute. Items name their media in ``image`` (also for videos, as
TimeViper does; ``video`` is accepted too):

* ``conversation``: ``{image, conversations}`` -> ``qa`` (first turn), as ``llava_video``.
* ``caption``: ``{image, caption}`` -> ``caption`` with a fixed describe-the-video question.
* ``tvg``: ``{image, duration, conversations}`` whose answer holds the span ("20.8 to 30.0
  seconds") -> ``grounding`` with that ``span``; ``video_start`` / ``video_end`` (seconds of the
  file) become the decode ``window``.
* ``dvc``: ``{image, duration, conversations}`` -> ``caption`` (question and events answer from
  the first turn).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lightning_viper.data.adapters.base import (
    BadRow,
    PackRecord,
    RowAdapter,
    Source,
    as_object,
    need,
    read_annotations,
    record_key,
    seconds,
)
from lightning_viper.data.adapters.conversation import conversation_turns
from lightning_viper.metrics.parsing import parse_span

CAPTION_QUESTION = "Describe the video in detail."
KINDS = ("conversation", "caption", "tvg", "dvc")


def _media(row: dict[str, Any], data_path: str, format: str) -> str:
    name = row.get("image") or row.get("video")
    if not isinstance(name, str) or not name.strip():
        raise BadRow(f"{format} item needs 'image' (the media file under data_path), got {name!r}")
    if " | " in name:
        raise BadRow(f"{format} item names several media files in 'image' ({name!r}); one video per sample")
    return str(Path(data_path) / name.strip())


def _first_turn(row: dict[str, Any], format: str) -> tuple[str, str]:
    turns = conversation_turns(row, format)
    human = next((t["value"] for t in turns if t["from"] in ("human", "user")), None)
    gpt = next((t["value"] for t in turns if t["from"] in ("gpt", "assistant")), None)
    if human is None or gpt is None:
        raise BadRow(f"{format} item's 'conversations' needs a human and a gpt turn")
    return human.replace("<image>", "").replace("<video>", "").strip(), gpt.strip()


def item_adapter(kind: str, data_path: str, source: str) -> RowAdapter:
    """The reader of one dataset-list entry's items (``kind`` is one of :data:`KINDS`)."""
    format = f"timeviper {kind}"

    def adapt(row: Any, i: int) -> list[PackRecord]:
        row = as_object(row, format)
        media = _media(row, data_path, format)
        key = record_key(source, Path(media).stem, f"{i:07d}")
        if kind == "conversation":
            ann: dict[str, Any] = {"task": row.get("task", "qa"), "conversations": conversation_turns(row, format)}
        elif kind == "caption":
            ann = {"task": "caption", "question": CAPTION_QUESTION, "answer": need(row, "caption", str, "text", format)}
        else:
            question, answer = _first_turn(row, format)
            ann = {"question": question, "answer": answer, "duration": seconds(row.get("duration"), "duration", format)}
            if kind == "tvg":
                span = parse_span(answer)
                if span is None:
                    raise BadRow(f"{format} item's answer {answer!r} holds no time span such as '20.8 to 30.0 seconds'")
                ann |= {"task": "grounding", "span": list(span)}
                if row.get("video_start") is not None and row.get("video_end") is not None:
                    start, end = (seconds(row[k], k, format) for k in ("video_start", "video_end"))
                    ann["window"] = [start, end]
            else:
                ann["task"] = "caption"
        return [PackRecord(key, media, ann | {"source": source})]

    return adapt


def timeviper_sources(path: Path, read: Callable[[str | Path], list[Any]] = read_annotations) -> list[Source]:
    """One :class:`Source` per entry of a TimeViper dataset-list YAML."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exn:
        raise ValueError(f"{path} is not YAML ({exn})") from exn
    entries = config.get("data") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: a TimeViper dataset list holds 'data: [{{json_path, data_path, format}}, ...]'")
    sources = []
    for n, entry in enumerate(entries):
        missing = [k for k in ("json_path", "data_path", "format") if not isinstance(entry, dict) or not entry.get(k)]
        if missing:
            raise ValueError(f"{path}: data entry {n} lacks {missing} (each entry needs json_path, data_path, format)")
        kind = str(entry["format"]).split("_")[0]
        if kind not in KINDS:
            raise ValueError(f"{path}: data entry {n} has format {entry['format']!r}; expected one of {KINDS}")
        json_path = Path(entry["json_path"])
        json_path = json_path if json_path.is_absolute() else path.parent / json_path
        if json_path.suffix.lower() not in (".json", ".jsonl"):
            raise ValueError(f"{path}: data entry {n}: json_path {str(json_path)!r} must be a .json or .jsonl file")
        rows = read(json_path)
        if entry.get("max_size"):
            rows = rows[: int(entry["max_size"])]
        adapter = item_adapter(kind, str(entry["data_path"]), f"timeviper_{json_path.stem}")
        sources.append(Source(json_path, rows, adapter, format=f"timeviper {kind}"))
    return sources
