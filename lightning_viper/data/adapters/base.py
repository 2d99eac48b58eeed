"""What every adapter shares: the record it makes, how rows are read, checked and reported.

An adapter turns one annotation row into :class:`PackRecord` s (a media path + the sample JSON the
reader parses, see docs/data.md). A row it cannot use raises :class:`BadRow`; :func:`convert_rows`
lists it as ``{"file", "row", "id", "reason"}`` and goes on with the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_viper.data.sample import OPTION_LETTERS
from lightning_viper.data.shards import safe_key

log = logging.getLogger(__name__)

# (row, index) -> records; the index is the row's position, or the number of records made so far
# for formats whose rows may hold several samples (it numbers the keys)
RowAdapter = Callable[[Any, int], list["PackRecord"]]


@dataclass
class PackRecord:
    """One sample to pack: ``media`` is a path relative to the media root (an extension may be
    missing: the packer tries the video extensions); ``annotation`` is the sample's JSON."""

    key: str
    media: str
    annotation: dict[str, Any] = field(default_factory=dict)


class BadRow(ValueError):
    """An annotation row that cannot become a sample; the message names the field at fault."""


@dataclass
class Source:
    """Rows of one annotation file and the adapter that reads them."""

    path: Path
    rows: list[Any]
    adapter: RowAdapter
    number_by_record: bool = False  # pass the count of records so far as the index (not the row's)
    format: str = ""


def _json_line(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exn:
        raise ValueError(f"{path} line {number} is not JSON ({exn}): fix or delete that line") from exn


def load_json(path: str | Path) -> Any:
    """The parsed content of a JSON file; an error names the file when it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exn:
        raise ValueError(f"{path} is not JSON ({exn})") from exn


def read_annotations(path: str | Path) -> list[Any]:
    """Rows of a .json (list, or dict of rows), .jsonl, .parquet or .txt (lines) annotation file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    if suffix == ".jsonl":
        text = path.read_text(encoding="utf-8")
        return [_json_line(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix == ".json":
        data = load_json(path)
        if isinstance(data, dict):
            return [{"__id__": k, **v} if isinstance(v, dict) else {"__id__": k, "value": v} for k, v in data.items()]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows or an object of rows")
        return data
    if suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise ValueError(f"{path}: unsupported annotation format {suffix!r} (use .json, .jsonl, .parquet or .txt)")


def row_id(row: Any) -> str | None:
    """The id a user can find the row by (its id / video / first word of a text line)."""
    if isinstance(row, dict):
        names = ("id", "uid", "q_uid", "question_id", "videoID", "video_id", "video", "vid", "key", "image", "__id__")
        for name in names:
            if row.get(name) is not None:
                return str(row[name])
        return None
    words = str(row).split()
    return words[0] if words else None


def as_object(row: Any, format: str) -> dict[str, Any]:
    """``row`` when it is a JSON object; else :class:`BadRow`."""
    if not isinstance(row, dict):
        raise BadRow(f"{format} row is not an object")
    return row


def need(row: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, format: str) -> Any:
    """``row[name]`` when it is a non-empty ``kind``; else :class:`BadRow` naming the field."""
    value = row.get(name)
    empty = value is None or (isinstance(value, str | list | tuple | dict) and len(value) == 0)
    if empty or not isinstance(value, kind) or isinstance(value, bool):
        raise BadRow(f"{format} row needs {name!r} ({what}), got {value!r}")
    return value


def seconds(value: Any, name: str, format: str) -> float:
    """A time in seconds from a number or numeric string; :class:`BadRow` naming ``name`` otherwise."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise BadRow(f"{format} row's {name!r} must be seconds (a number), got {value!r}") from None


def mcq_annotation(
    format: str, question: str, options: Sequence[Any], index: int, groups: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The sample JSON of a multiple-choice row: options lettered ``A. ...`` when bare, the answer
    as letter + index, and ``groups`` (e.g. ``{"duration": "short", "task": "..."}``) for the
    grouped test accuracy. ``index`` must name one of the options."""
    if not options or len(options) > len(OPTION_LETTERS):
        raise BadRow(f"{format} row needs 1 to {len(OPTION_LETTERS)} options, got {len(options)}")
    if not 0 <= index < len(options):
        raise BadRow(f"{format} row's answer (index {index}) is not one of its {len(options)} options")
    ann: dict[str, Any] = {
        "task": "mcq",
        "question": question.strip(),
        "options": [str(o).strip() for o in options],
        "answer": OPTION_LETTERS[index],
        "answer_index": index,
        "source": format,
    }
    kept = {k: v for k, v in (groups or {}).items() if v not in (None, "", [])}
    if kept:
        ann["groups"] = {k: v if isinstance(v, list) else str(v) for k, v in kept.items()}
    return ann


def convert_rows(
    rows: list[Any], format: str, adapter: RowAdapter, number_by_record: bool = False, file: str = ""
) -> tuple[list[PackRecord], list[dict[str, Any]]]:
    """Records of every good row, and ``{"file", "row", "id", "reason"}`` for every malformed one
    (``row``: 0-based position among the file's rows; blank .txt lines are not rows)."""
    records: list[PackRecord] = []
    bad: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        try:
            records.extend(adapter(row, len(records) if number_by_record else i))
        except (BadRow, KeyError, TypeError, ValueError) as exn:  # malformed row data: skipped, reported
            reason = str(exn) if isinstance(exn, BadRow) else f"{type(exn).__name__}: {exn}"
            bad.append({"file": file, "row": i, "id": row_id(row), "reason": f"bad row: {reason}"})
            log.warning("skipping %s row %d (%s) of %s: %s", format, i, row_id(row), file, reason)
    return records, bad


def record_key(*parts: Any) -> str:
    """A sample key from parts joined by ``_`` (made safe for WebDataset)."""
    return safe_key("_".join(str(p) for p in parts))
