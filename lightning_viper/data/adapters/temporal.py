"""Time-annotated videos: grounding (Charades-STA) and dense captions (ActivityNet Captions, YouCook2).

* ``charades``: Charades-STA ``charades_sta_{train,test}.txt`` lines ``"<vid> <start> <end>##<sentence>"``,
  or JSON rows ``{video | vid, start, end | timestamp: [s, e], sentence}``, or ``{vid: {timestamps:
  [[s, e], ...], sentences: [...]}}`` (also ActivityNet Captions' layout) -> one ``grounding``
  sample per sentence, ``span`` [start, end] seconds.
* ``activitynet_captions``: ActivityNet Captions ``train.json`` / ``val_1.json`` / ``val_2.json``
  ``{vid: {duration, timestamps: [[s, e], ...] (seconds), sentences: [...]}}``; media ``<vid>``
  (e.g. ``v_QOlSCBRmfWY``).
* ``youcook2``: YouCook2 ``youcookii_annotations_trainval.json`` ``{database: {vid: {duration,
  subset, recipe_type, annotations: [{segment: [s, e] (seconds), sentence}]}}}``; media
  ``<subset>/<recipe_type>/<vid>`` (the layout of YouCook2's ``raw_videos/`` folder, which is
  MEDIA_ROOT).

Dense captions become one ``caption`` sample per video whose reference lists the events in time
order, one per line: ``"12.0 - 25.5 seconds, <sentence>."``; ``duration`` is the annotation's.
"""

from __future__ import annotations

from typing import Any

from lightning_viper.data.adapters.base import BadRow, PackRecord, as_object, need, record_key, seconds

GROUNDING_QUESTION = 'When does "{sentence}" happen in the video?'
DENSE_CAPTION_QUESTION = "Localize every event in the video and describe each one, with its start and end in seconds."


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
    return PackRecord(record_key(vid, f"{i:07d}"), vid, ann)


def charades(row: Any, i: int) -> list[PackRecord]:
    """Records of one Charades row; ``i`` numbers the keys (the count of records so far)."""
    if isinstance(row, str):
        head, _, sentence = row.partition("##")
        parts = head.split()
        if len(parts) != 3 or not sentence.strip():
            raise BadRow("charades line is not '<vid> <start> <end>##<sentence>'")
        return [_grounding(parts[0], float(parts[1]), float(parts[2]), sentence, i)]
    row = as_object(row, "charades")
    if "timestamps" in row and "sentences" in row:
        pairs = zip(row["timestamps"], row["sentences"], strict=True)
        return [_grounding(str(row["__id__"]), float(s), float(e), t, i + j) for j, ((s, e), t) in enumerate(pairs)]
    vid = row.get("video") or row.get("vid") or row.get("__id__")
    if not vid or "sentence" not in row or not ("timestamp" in row or ("start" in row and "end" in row)):
        raise BadRow("charades row needs video (or vid), sentence and start + end (or timestamp [s, e])")
    start, end = row["timestamp"] if "timestamp" in row else (row["start"], row["end"])
    return [_grounding(str(vid), float(start), float(end), str(row["sentence"]), i)]


def _events(pairs: list[tuple[Any, Any]], format: str, field: str) -> list[tuple[float, float, str]]:
    """Validated ``(start_s, end_s, sentence)`` events in time order; ``field`` names the span of
    event ``n`` in messages (e.g. ``"timestamps[{n}]"``)."""
    events = []
    for n, (span, sentence) in enumerate(pairs):
        name = field.format(n=n)
        if not isinstance(span, list | tuple) or len(span) != 2:
            raise BadRow(f"{format} row's {name!r} must be [start_s, end_s], got {span!r}")
        start, end = seconds(span[0], name, format), seconds(span[1], name, format)
        if not 0 <= start <= end:
            raise BadRow(f"{format} row's {name!r} {list(span)!r} must have 0 <= start <= end")
        if not isinstance(sentence, str) or not sentence.strip():
            raise BadRow(f"{format} row's event {n} has no sentence")
        events.append((start, end, sentence.strip().rstrip(".")))
    if not events:
        raise BadRow(f"{format} row has no events")
    return sorted(events)


def dense_caption_record(
    format: str, vid: str, media: str, duration: Any, events: list[tuple[float, float, str]]
) -> PackRecord:
    """The ``caption`` sample of a video's events (a reference line per event)."""
    length = seconds(duration, "duration", format)
    late = [(s, e) for s, e, _ in events if s >= length or e > length + 1.0]
    if length <= 0 or late:
        raise BadRow(f"{format} row's 'duration' {duration!r} does not hold its events {late[:3]}")
    answer = "\n".join(f"{s:.1f} - {e:.1f} seconds, {text}." for s, e, text in events)
    ann = {
        "task": "caption",
        "question": DENSE_CAPTION_QUESTION,
        "answer": answer,
        "duration": length,
        "source": format,
    }
    return PackRecord(record_key(format, vid), media, ann)


def activitynet_captions(row: Any, i: int) -> list[PackRecord]:
    row = as_object(row, "activitynet_captions")
    vid = str(row.get("__id__") or "")
    spans = need(row, "timestamps", list, "[[start_s, end_s], ...]", "activitynet_captions")
    sentences = need(row, "sentences", list, "one sentence per timestamp", "activitynet_captions")
    if len(spans) != len(sentences):
        raise BadRow(f"activitynet_captions row has {len(spans)} 'timestamps' but {len(sentences)} 'sentences'")
    events = _events(list(zip(spans, sentences, strict=True)), "activitynet_captions", "timestamps[{n}]")
    return [dense_caption_record("activitynet_captions", vid, vid, row.get("duration"), events)]


def youcook2(row: Any, i: int) -> list[PackRecord]:
    row = as_object(row, "youcook2")
    vid = str(row.get("__id__") or "")
    annotations = need(row, "annotations", list, "[{segment: [s, e], sentence}, ...]", "youcook2")
    if not all(isinstance(a, dict) for a in annotations):
        raise BadRow("youcook2 row's 'annotations' must be objects {segment, sentence}")
    events = _events(
        [(a.get("segment"), a.get("sentence")) for a in annotations], "youcook2", "annotations[{n}].segment"
    )
    parts = [str(row[k]) for k in ("subset", "recipe_type") if row.get(k) is not None]
    return [dense_caption_record("youcook2", vid, "/".join([*parts, vid]), row.get("duration"), events)]


def youcook2_rows(data: Any) -> list[Any]:
    """The videos of YouCook2's ``{database: {vid: {...}}}`` as rows (``__id__`` = the video id)."""
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ValueError("a youcook2 annotation file is an object {'database': {video_id: {...}}}")
    return [{"__id__": k, **v} if isinstance(v, dict) else v for k, v in data["database"].items()]
