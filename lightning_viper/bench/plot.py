"""PNG plot of a prefill benchmark: peak memory and latency against frames, one line per strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_prefill(results: dict[str, Any], path: Path) -> Path:
    """Two log-log panels (peak GiB, latency s) vs frames; OOM sizes marked with an x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    strategies = list(dict.fromkeys(r["strategy"] for r in results["rows"]))
    for strategy in strategies:
        rows = [r for r in results["rows"] if r["strategy"] == strategy]
        ok = [r for r in rows if r["status"] == "ok"]
        line = lat_ax.plot([r["frames"] for r in ok], [r["latency_ms"] / 1000 for r in ok], "o-", label=strategy)
        color = line[0].get_color()
        if ok and ok[0].get("peak_alloc_gib") is not None:
            mem_ax.plot([r["frames"] for r in ok], [r["peak_alloc_gib"] for r in ok], "o-", color=color, label=strategy)
        for r in rows:
            if r["status"] == "oom":
                for ax in (mem_ax, lat_ax):
                    ax.axvline(r["frames"], color=color, ls=":", lw=1)
                    ax.plot([r["frames"]], [ax.get_ylim()[1] if ax.lines else 1], "x", color=color)
    peer = [p for p in results.get("peer", []) if p["status"] == "ok"]
    if peer:
        lat_ax.plot(
            [p["frames"] for p in peer],
            [p["hf_end_to_end_ms"] / 1000 for p in peer],
            "s--",
            color="grey",
            label="transformers NemotronH (none)",
        )
    info = results.get("device", {})
    gpu = info.get("gpu", info.get("device", ""))
    if info.get("gpu_mem_gib"):
        mem_ax.axhline(info["gpu_mem_gib"], color="black", lw=0.8, ls="--", label=f"{gpu} memory")
    for ax, label in ((mem_ax, "peak allocated (GiB)"), (lat_ax, "prefill to first token (s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"prefill, {results['config']['model']} model, {gpu}, chunk={results['config']['prefill_chunk']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
