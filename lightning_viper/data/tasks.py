"""The task names a sample's ``task`` field may hold (shards, metrics and the synthetic set agree on these)."""

from __future__ import annotations

TASKS = ("mcq", "qa", "caption", "grounding", "count")
