"""Prompt, video and score of the local needle task (lmms-eval imports this file by path)."""

from __future__ import annotations

from typing import Any

from lightning_viper.data.sample import format_question
from lightning_viper.metrics.parsing import parse_choice


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    return format_question(doc, int(doc["duration"]), float(doc["duration"]), grounding_context=False)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"viper_acc": float(parse_choice(results[0], doc["options"]) == doc["answer_index"])}
