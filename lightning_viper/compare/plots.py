"""PNG plots of a comparison: score vs vision tokens kept, memory and prefill time vs frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from lightning_viper.compare.report import MEMORY, PREFILL, SCORES, Row


def _numeric_frames(rows: Sequence[Row]) -> list[float] | None:
    try:
        values = sorted({float(r.frames) for r in rows})
    except ValueError:
        return None
    return values if len(values) > 1 else None


def score_vs_tokens(rows: Sequence[Row], out: Path) -> Path | None:
    """One panel per score: score against the fraction of vision tokens kept, a point per row."""
    scores = [(k, t) for k, t in SCORES if any(k in r.values and "kept" in r.values for r in rows)]
    if not scores:
        return None
    many_frames = len({r.frames for r in rows}) > 1
    colors = {v: f"C{i % 10}" for i, v in enumerate(dict.fromkeys(r.variant for r in rows))}
    kept = [r.values["kept"][0] for r in rows if "kept" in r.values]
    log_x = min(kept) > 0 and max(kept) / min(kept) > 20  # fractions spanning decades
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], scores, strict=True):
        for variant, color in colors.items():
            points = [(r.values["kept"][0], r.values[key][0], r.frames) for r in rows
                      if r.variant == variant and key in r.values and "kept" in r.values]  # fmt: skip
            if not points:
                continue
            ax.scatter([p[0] for p in points], [p[1] for p in points], color=color, label=variant)
            if many_frames:
                for x, y, frames in points:
                    ax.annotate(f"{frames}f", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("vision tokens kept (fraction" + (", log scale)" if log_x else ")"))
        ax.set_ylabel(title)
        if log_x:
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


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
        metric_vs_frames(rows, MEMORY, "peak memory (MB)", out_dir / "memory_vs_frames.png"),
        metric_vs_frames(rows, PREFILL, "prefill time per sample (ms)", out_dir / "prefill_vs_frames.png"),
    ]
    return [p for p in made if p is not None]
