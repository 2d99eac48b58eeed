"""LLaVA-Video style conversation rows.

``llava_video``: ``{id?, video | image, conversations: [{from: human, value: "<image>\\n..."},
{from: gpt, value: ...}, ...]}`` (the LLaVA-Video-178K release's JSON files) -> task ``qa`` (first
turn; the whole conversation is kept under ``conversations``). A row's own ``task`` field wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_viper.data.adapters.base import BadRow, PackRecord, as_object, record_key


def conversation_turns(row: dict[str, Any], format: str) -> list[dict[str, str]]:
    """The row's ``conversations`` as ``{from, value}`` turns; at least a question and an answer."""
    convs = row.get("conversations") or []
    if not isinstance(convs, list) or len(convs) < 2:
        raise BadRow(
            f"{format} row needs >= 2 conversation turns (a question and an answer) in 'conversations', "
            f"got {len(convs) if isinstance(convs, list) else repr(convs)}"
        )
    if not all(isinstance(c, dict) and "from" in c and "value" in c for c in convs):
        raise BadRow(f"{format} row has a turn in 'conversations' without 'from' and 'value'")
    return [{"from": str(c["from"]), "value": str(c["value"])} for c in convs]


def llava_video(row: Any, i: int) -> list[PackRecord]:
    row = as_object(row, "llava_video")
    media = row.get("video") or row.get("image")
    if not media:
        raise BadRow("llava_video row needs 'video' (or 'image')")
    ann = {
        "task": row.get("task", "qa"),
        "conversations": conversation_turns(row, "llava_video"),
        "source": row.get("data_source", "llava_video"),
    }
    return [PackRecord(record_key(row.get("id", Path(media).stem), f"{i:07d}"), str(media), ann)]
