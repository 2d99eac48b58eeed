"""Flatten a nested config into MLflow-friendly ``a.b.c -> value`` params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_VALUE_CHARS = 6000  # MLflow's limit on a param value


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts and lists -> flat ``{"model.init_args.lr": "1e-05", ...}``; values as text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_config(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten_config(item, f"{name}.{i}"))
        else:
            out[name] = str(value)[:MAX_VALUE_CHARS]
    return out
