"""Annotation adapters: public data set schemas -> shard records (media file + our JSON).

One module per family: :mod:`.conversation` (``llava_video``), :mod:`.mcq` (``videomme``,
``mlvu``, ``longvideobench``, ``longvideobench_subtitles``, ``lvbench``, ``egoschema``),
:mod:`.temporal` (``charades``, ``activitynet_captions``, ``youcook2``) and :mod:`.timeviper`
(TimeViper's dataset-list YAML).
Each module's docstring says which release and file its layout follows.

A malformed row (a missing or mistyped field, an answer that names no option, ...) is skipped and
reported with its file, position, id and reason (:func:`convert_rows`); it never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_viper.data.adapters.base import (
    BadRow,
    PackRecord,
    RowAdapter,
    Source,
    convert_rows,
    load_json,
    read_annotations,
)
from lightning_viper.data.adapters.conversation import llava_video
from lightning_viper.data.adapters.mcq import egoschema, longvideobench, lvbench, lvbench_rows, mlvu, videomme
from lightning_viper.data.adapters.temporal import activitynet_captions, charades, youcook2, youcook2_rows
from lightning_viper.data.adapters.timeviper import timeviper_sources

__all__ = ["FORMATS", "BadRow", "PackRecord", "Source", "convert_rows", "load_records", "read_annotations"]


def _mlvu_sources(path: Path, answers: str | None) -> list[Source]:
    """MLVU: one json file, or the ``json/`` folder of them (every ``*.json`` in it)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no MLVU .json files in {str(path)!r}")
    return [Source(f, read_annotations(f), mlvu(f.stem), format="mlvu") for f in files]


def _egoschema_sources(path: Path, answers: str | None) -> list[Source]:
    table = load_json(answers) if answers else {}
    if not isinstance(table, dict):
        raise ValueError(f"{answers}: EgoSchema answers are an object {{q_uid: option index}}")
    return [Source(path, read_annotations(path), egoschema(table, answers), format="egoschema")]


def _plain(adapter: RowAdapter, format: str, by_record: bool = False) -> Callable[[Path, str | None], list[Source]]:
    """Sources of a format whose file's rows are its samples' rows (read by :func:`read_annotations`)."""

    def sources(path: Path, answers: str | None) -> list[Source]:
        return [Source(path, read_annotations(path), adapter, by_record, format)]

    return sources


# format -> (annotation path, answers file) -> the sources to convert
FORMATS: dict[str, Callable[[Path, str | None], list[Source]]] = {
    "llava_video": _plain(llava_video, "llava_video"),
    "videomme": _plain(videomme, "videomme"),
    "charades": _plain(charades, "charades", by_record=True),
    "mlvu": _mlvu_sources,
    "longvideobench": _plain(longvideobench(), "longvideobench"),
    "longvideobench_subtitles": lambda p, a: [
        Source(p, read_annotations(p), longvideobench(p.parent / "subtitles"), format="longvideobench")
    ],
    "lvbench": lambda p, a: [Source(p, lvbench_rows(read_annotations(p)), lvbench, format="lvbench")],
    "egoschema": _egoschema_sources,
    "activitynet_captions": _plain(activitynet_captions, "activitynet_captions"),
    "youcook2": lambda p, a: [Source(p, youcook2_rows(load_json(p)), youcook2, format="youcook2")],
    "timeviper": lambda p, a: timeviper_sources(p),
}


def load_records(
    annotations: str | Path, format: str, answers: str | None = None
) -> tuple[list[PackRecord], list[dict[str, Any]]]:
    """Read the annotation file (or MLVU folder) and convert its rows with the adapter ``format``:
    the records, and the malformed rows skipped (``{"file", "row", "id", "reason"}``).
    ``answers``: EgoSchema's separate answers file (``subset_answers.json``)."""
    if format not in FORMATS:
        raise ValueError(f"unknown annotation format {format!r}: choose from {sorted(FORMATS)}")
    path = Path(annotations)
    if not path.exists():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    records: list[PackRecord] = []
    bad: list[dict[str, Any]] = []
    for source in FORMATS[format](path, answers):
        recs, rows = convert_rows(source.rows, source.format, source.adapter, source.number_by_record, str(source.path))
        records.extend(recs)
        bad.extend(rows)
    return records, bad
