"""Pack an annotation file + a media folder into WebDataset shards of about a target size.

The plan (which record goes to which shard) depends only on the records and file sizes, so a rerun
makes the same plan and skips every shard already complete (a shard is complete when both
``shard-XXXXXX.tar`` and its ``shard-XXXXXX.stats.json`` exist; tars are written under a temporary
name and renamed). Each record is checked before packing: a missing file, an empty file, an
unsupported extension, a video PyAV cannot decode or one whose data ends before its declared
duration is skipped and reported with the reason, as is every malformed annotation row.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lightning_viper.data.adapters import PackRecord, load_records
from lightning_viper.data.decode import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DecodeError,
    TruncatedVideo,
    decode_image,
    probe_video,
)
from lightning_viper.data.sample import BadSample, check_times, parse_annotation
from lightning_viper.data.shards import write_shard

log = logging.getLogger(__name__)


def resolve_media(media_root: Path, name: str) -> Path | None:
    """The media file for ``name`` under ``media_root``: as given, else with a video extension added."""
    path = Path(name) if os.path.isabs(name) else media_root / name
    if path.is_file():
        return path
    for ext in VIDEO_EXTENSIONS:
        candidate = path.with_name(f"{path.name}.{ext}")
        if candidate.is_file():
            return candidate
    return None


def probe(path: Path) -> float:
    """Check a media file decodes; return its duration in seconds (0.0 for an image).

    A video is decoded at its first frame and from the keyframe before its declared end to the end
    of the file (:func:`probe_video`), so a file cut short is caught without decoding all of it.

    Raises:
        ValueError: the reason, starting with "truncated video" or "undecodable".
    """
    try:
        if path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
            decode_image(path, image_size=8)
            return 0.0
        return probe_video(path)
    except TruncatedVideo as exn:
        raise ValueError(str(exn)) from exn
    except DecodeError as exn:
        raise ValueError(f"undecodable: {exn}") from exn


def _check(record: PackRecord, media_root: Path) -> tuple[Path | None, str | None]:
    path = resolve_media(media_root, record.media)
    if path is None:
        return None, "missing file"
    ext = path.suffix.lower().lstrip(".")
    if ext not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        return None, f"unsupported extension .{ext}"
    if path.stat().st_size == 0:
        return None, "empty file"
    return path, None


def _prepare(record: PackRecord, root: Path, check: bool) -> tuple[Path | None, dict[str, Any], str | None]:
    """(media path, annotation with the probed duration, None), or (None, ..., why it is skipped).
    The annotation is validated as the reader will (:func:`parse_annotation`, :func:`check_times`)."""
    path, reason = _check(record, root)
    ann = dict(record.annotation)
    if path is None:
        return None, ann, reason
    try:
        duration = probe(path) if check else None
        if duration is not None:
            ann.setdefault("duration", duration)
        parsed = parse_annotation(json.dumps(ann).encode(), record.key)
        if duration is not None:
            check_times(parsed, duration, record.key)
    except BadSample as exn:
        return None, ann, f"bad annotation: {exn}"
    except ValueError as exn:
        return None, ann, str(exn)
    return path, ann, None


def pack_shard(tar_path: str, records: list[dict[str, Any]], media_root: str, check: bool = True) -> dict[str, Any]:
    """Write one shard from ``records`` (dicts of :class:`PackRecord`); returns its stats (also
    written next to it as ``.stats.json``, the mark of a finished shard)."""
    root = Path(media_root)
    skipped: list[dict[str, str]] = []
    written = 0

    def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
        nonlocal written
        for item in records:
            record = PackRecord(**item)
            path, ann, reason = _prepare(record, root, check)
            if path is None:
                skipped.append({"key": record.key, "media": record.media, "reason": reason or "?"})
                continue
            written += 1
            ext = path.suffix.lower().lstrip(".")
            yield record.key, {ext: path.read_bytes(), "json": json.dumps(ann, sort_keys=True).encode()}

    size = write_shard(tar_path, samples())
    stats = {"shard": tar_path, "written": written, "skipped": skipped, "bytes": size}
    if written == 0:
        os.remove(tar_path)
        stats["shard"] = None
    Path(tar_path).with_suffix(".stats.json").write_text(json.dumps(stats))
    return stats


def plan_shards(records: list[PackRecord], media_root: Path, shard_bytes: int) -> list[list[PackRecord]]:
    """Greedy split in record order: a new shard starts when the next file would pass ``shard_bytes``."""
    plan: list[list[PackRecord]] = [[]]
    size = 0
    for record in records:
        path = resolve_media(media_root, record.media)
        nbytes = path.stat().st_size if path is not None else 0
        if plan[-1] and size + nbytes > shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(record)
        size += nbytes
    return [p for p in plan if p]


def pack(
    annotations: str,
    media_root: str,
    out_dir: str,
    format: Literal[
        "llava_video",
        "videomme",
        "charades",
        "mlvu",
        "longvideobench",
        "longvideobench_subtitles",
        "lvbench",
        "egoschema",
        "activitynet_captions",
        "youcook2",
        "timeviper",
    ],
    shard_size_mb: float = 256,
    workers: int = 4,
    prefix: str = "shard",
    check: bool = True,
    limit: int | None = None,
    answers: str | None = None,
) -> dict[str, Any]:
    """Pack ``annotations`` (JSON / JSONL / parquet / txt) + media under ``media_root`` into shards.

    Args:
        annotations: annotation file in the schema of ``format`` (see :mod:`.adapters`; for
            ``mlvu`` also MLVU's ``json/`` folder, for ``timeviper`` the dataset-list YAML).
        media_root: folder the annotation's media paths are relative to.
        out_dir: output folder: ``<prefix>-000000.tar``, ..., ``summary.json``.
        format: annotation schema (one module of :mod:`.adapters` per family says which release
            and file it follows).
        shard_size_mb: target shard size in MiB (a single larger file gets a shard of its own).
        workers: processes writing shards in parallel (1: in this process).
        prefix: shard file name prefix.
        check: decode the first frame and the last keyframe interval of every file and record the
            duration (skips undecodable and truncated ones).
        limit: pack only the first ``limit`` records (a quick trial).
        answers: ``egoschema`` only: the answers file ``{q_uid: option index}`` (``subset_answers.json``).

    Returns:
        The summary (also in ``out_dir/summary.json``): shards, counts written/skipped, skip reasons,
        every skipped record (key, media, reason) and malformed row (file, row, id, reason), bytes, and
        how many shards were reused from an earlier run.
    """
    root, out = Path(media_root), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"media root {media_root!r} is not a directory")
    records, bad_rows = load_records(annotations, format, answers)
    records = records[:limit]
    plan = plan_shards(records, root, int(shard_size_mb * (1 << 20)))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, str, list[dict[str, Any]]]] = []
    for i, shard in enumerate(plan):
        tar = out / f"{prefix}-{i:06d}.tar"
        stats_file = tar.with_suffix(".stats.json")
        if stats_file.exists() and (tar.exists() or json.loads(stats_file.read_text())["shard"] is None):
            results[i] = json.loads(stats_file.read_text()) | {"resumed": True}
        else:
            todo.append((i, str(tar), [asdict(r) for r in shard]))
    bar = tqdm(total=len(plan), initial=len(results), desc=f"packing {format}", unit="shard")
    if workers > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures: dict[Future, int] = {pool.submit(pack_shard, t, r, str(root), check): i for i, t, r in todo}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
    else:
        for i, tar_path, recs in todo:
            results[i] = pack_shard(tar_path, recs, str(root), check)
            bar.update()
    bar.close()
    ordered = [results[i] for i in sorted(results)]
    skipped = bad_rows + [s for r in ordered for s in r["skipped"]]
    summary = {
        "annotations": annotations,
        "format": format,
        "out_dir": str(out),
        "shards": [r["shard"] for r in ordered if r["shard"]],
        "num_records": len(records),
        "num_bad_rows": len(bad_rows),
        "num_written": sum(r["written"] for r in ordered),
        "num_skipped": len(skipped),
        "skipped_by_reason": dict(Counter(s["reason"].split(":")[0] for s in skipped)),
        "skipped": skipped,
        "bytes": sum(r["bytes"] for r in ordered if r["shard"]),
        "resumed_shards": sum(1 for r in ordered if r.get("resumed")),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "packed %d samples into %d shards (%d skipped)", summary["num_written"], len(summary["shards"]), len(skipped)
    )
    return summary
