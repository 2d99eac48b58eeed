"""PNG plots of a comparison: score vs budget (tokens kept, tokens per layer, prefill FLOPs), memory
and prefill time vs frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from lightning_viper.compare.report import GFLOPS, GFLOPS_LLM, LAYER_MEAN, MEMORY, PREFILL, SCORES, Row


def _numeric_frames(rows: Sequence[Row]) -> list[float] | None:
    try:
        values = sorted({float(r.frames) for r in rows})
    except ValueError:
        return None
    return values if len(values) > 1 else None


def score_vs(rows: Sequence[Row], x_key: str, x_label: str, out: Path) -> Path | None:
    """One panel per score: score against ``x_key`` (a budget), a point per row; None without data."""
    scores = [(k, t) for k, t in SCORES if any(k in r.values and x_key in r.values for r in rows)]
    if not scores:
        return None
    many_frames = len({r.frames for r in rows}) > 1
    variants = list(dict.fromkeys(r.variant for r in rows))
    colors = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    markers = {v: "os^Dv<>p*h"[(i // 10) % 10] for i, v in enumerate(variants)}  # colours repeat after 10
    xs = [r.values[x_key][0] for r in rows if x_key in r.values]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 20  # values spanning decades
    fig, axes = plt.subplots(1, len(scores), figsize=(6 * len(scores), 4.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], scores, strict=True):
        for variant in variants:
            points = [(r.values[x_key][0], r.values[key][0], r.frames) for r in rows
                      if r.variant == variant and key in r.values and x_key in r.values]  # fmt: skip
            if not points:
                continue
            ax.scatter([p[0] for p in points], [p[1] for p in points], color=colors[variant],
                       marker=markers[variant], label=variant)  # fmt: skip
            if many_frames:
                for x, y, frames in points:
                    ax.annotate(f"{frames}f", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(x_label + (" (log scale)" if log_x else ""))
        ax.set_ylabel(title)
        if log_x:
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def score_vs_tokens(rows: Sequence[Row], out: Path) -> Path | None:
    """Score against the fraction of vision tokens reaching the last layer."""
    return score_vs(rows, "kept", "vision tokens kept (fraction)", out)


def metric_vs_frames(rows: Sequence[Row], key: str, label: str, out: Path) -> Path | None:
    """A line per strategy of ``key`` against frames; None unless several frame counts were run."""
    if _numeric_frames(rows) is None or not any(key in r.values for r in rows):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(r.variant for r in rows):
        points = sorted((float(r.frames), r.values[key][0]) for r in rows if r.variant == variant and key in r.values)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    ax.set_xlabel("frames")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def all_plots(rows: Sequence[Row], out_dir: Path) -> list[Path]:
    """Write every plot that the rows support into ``out_dir``; returns the written files."""
    made = [
        score_vs_tokens(rows, out_dir / "score_vs_tokens.png"),
        score_vs(rows, LAYER_MEAN, "vision tokens per LLM layer (mean)", out_dir / "score_vs_layer_tokens.png"),
        score_vs(rows, GFLOPS, "prefill GFLOPs per sample", out_dir / "score_vs_flops.png"),
        score_vs(rows, GFLOPS_LLM, "LLM prefill GFLOPs per sample", out_dir / "score_vs_llm_flops.png"),
        metric_vs_frames(rows, MEMORY, "peak memory (MB)", out_dir / "memory_vs_frames.png"),
        metric_vs_frames(rows, PREFILL, "prefill time per sample (ms)", out_dir / "prefill_vs_frames.png"),
    ]
    return [p for p in made if p is not None]
