"""Markdown tables from ``bench_prefill`` results (the tables of docs/benchmarks.md).

``viper bench table docs/benchmarks/prefill_whole.json`` (or ``python -m lightning_viper.bench table ...``)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PREFILL_HEADER = (
    "| strategy | frames | tokens in | tokens at last layer | latency s | embed s | backbone s | peak GiB "
    "| tokens/s | MFU % | enc MFU % | LLM MFU % |"
)


def _pct(flops: float, ms: float, peak: float | None) -> str:
    return "" if not peak or ms <= 0 else f"{100 * flops / (ms / 1000) / peak:.1f}"


def prefill_row(row: dict[str, Any], peak: float | None) -> str:
    """One table row; rows that did not run show their status in the latency column."""
    cells: list[str] = [row["strategy"], str(row["frames"])]
    if row.get("status") != "ok":
        return "| " + " | ".join([*cells, "", "", row.get("status", "?"), *[""] * 7]) + " |"
    f = row["flops"]
    embed_flops = f["encoder"] + f["projector"]
    llm_flops = f["backbone"] + f.get("compression", 0.0)
    cells += [
        str(row["seq_len"]),
        str(row["seq_len_final"]),
        f"{row['latency_ms'] / 1000:.2f}",
        f"{row['embed_ms'] / 1000:.2f}",
        f"{row['backbone_ms'] / 1000:.2f}",
        f"{row['peak_alloc_gib']:.1f}",
        f"{row['tokens_per_s']:.0f}",
        _pct(f["total"], row["latency_ms"], peak),
        _pct(embed_flops, row["embed_ms"], peak),
        _pct(llm_flops, row["backbone_ms"], peak),
    ]
    return "| " + " | ".join(cells) + " |"


def prefill_table(results: dict[str, Any]) -> str:
    """The whole table for one results file (MFU against ``config.peak_flops``)."""
    peak = results["config"].get("peak_flops")
    sep = "|" + "---|" * PREFILL_HEADER.count(" | ") + "---|"
    return "\n".join([PREFILL_HEADER, sep, *(prefill_row(r, peak) for r in results["rows"])])


def bench_table(results: str) -> str:
    """Print a prefill results file as the markdown table of docs/benchmarks.md.

    Args:
        results: a JSON file written by viper bench prefill, e.g. docs/benchmarks/prefill_whole.json.
    """
    path = Path(results)
    if not path.is_file():
        raise FileNotFoundError(f"no results file {results!r}: give the JSON that viper bench prefill wrote")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{results} is not JSON ({error}): give the file viper bench prefill wrote") from error
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(data.get("config") if isinstance(data, dict) else None, dict) or not isinstance(rows, list):
        raise ValueError(f"{results} has no 'config' and 'rows': it is not a viper bench prefill results file")
    if any(not isinstance(r, dict) or "strategy" not in r or "frames" not in r for r in rows):
        raise ValueError(f"{results}: every row needs 'strategy' and 'frames' (a prefill results file)")
    return prefill_table(data)
