"""PNG plots of the analysis: knockout curves, head heatmaps and share curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from lightning_viper.sequence import TokenKind

FLOW_STYLE = {"V2I": ("C0", "o"), "V2R": ("C3", "s"), "V2T": ("C2", "^")}
KIND_LETTER = {"mamba": "M", "attention": "*", "decoder": "D", "mlp": "-"}
MAX_PIXELS = 256  # heatmaps of longer sequences are average-pooled to this many rows / columns


def knockout_plot(result: Mapping[str, Any], title: str, out: Path) -> Path:
    """Task score and answer loss against the knocked-out layer, one line per flow, baseline dashed."""
    base = result["baseline"]
    points = result["points"]
    layers = sorted({p["layer"] for p in points})
    kinds = {p["layer"]: p["kind"] for p in points}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "score", "task score"), (axes[1], "loss", "answer loss (CE / token)")):
        ax.axhline(base[key], color="grey", linestyle="--", label="no knockout")
        for flow in dict.fromkeys(p["flow"] for p in points):
            color, marker = FLOW_STYLE.get(flow, ("C7", "x"))
            xs = [p["layer"] for p in points if p["flow"] == flow]
            ys = [p[key] for p in points if p["flow"] == flow]
            ax.plot(xs, ys, color=color, marker=marker, label=f"block {flow}")
        ax.set_xticks(layers, [f"{i}\n{KIND_LETTER.get(kinds[i], '?')}" for i in layers])
        ax.set_xlabel("knocked-out layer (M = Mamba-2, * = attention)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def share_plot(layers: Sequence[Mapping[str, Any]], title: str, out: Path) -> Path:
    """Share of each query kind's mass on vision / instruction / other keys, per layer."""
    kinds = [q for q in ("instruction", "response") if any(q in lay["shares"] for lay in layers)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.8), squeeze=False)
    for ax, query in zip(axes[0], kinds, strict=True):
        rows = [lay for lay in layers if query in lay["shares"]]
        xs = [lay["layer"] for lay in rows]
        for i, group in enumerate(("vision", "instruction", "other")):
            ax.plot(xs, [lay["shares"][query][group] for lay in rows], marker="o", color=f"C{i}", label=f"{group} keys")
        ax.set_xticks(xs, [f"{lay['layer']}\n{KIND_LETTER.get(lay['kind'], '?')}" for lay in rows])
        ax.set_ylim(0, 1)
        ax.set_title(f"{query} queries")
        ax.set_xlabel("layer (M = Mamba-2, * = attention)")
        ax.set_ylabel("share of the row's mass")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _pooled(m: Tensor) -> Tensor:
    t = m.shape[-1]
    if t <= MAX_PIXELS:
        return m
    return torch.nn.functional.adaptive_avg_pool2d(m[None, None], MAX_PIXELS)[0, 0]


def heatmap_plot(
    matrices: Mapping[tuple[int, int], Tensor],
    labels: Mapping[tuple[int, int], str],
    kinds: Mapping[int, Tensor],
    out: Path,
) -> Path:
    """|W| row-normalised (log colour scale) of chosen (layer, head)s; the layer's vision span
    (``kinds``: layer -> (T,) token kinds) marked on both axes."""
    keys = list(matrices)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        vision = (kinds[key[0]] == TokenKind.VISION).nonzero().flatten()
        scale = min(1.0, MAX_PIXELS / max(1, int(kinds[key[0]].shape[0])))
        a = matrices[key].abs()
        a = a / a.sum(-1, keepdim=True).clamp(min=1e-30)
        img = _pooled(a).clamp(min=1e-6).log10()
        ax.imshow(img.numpy(), cmap="viridis", vmin=-6, vmax=0, interpolation="nearest")
        if vision.numel():
            lo, hi = float(vision.min()) * scale - 0.5, float(vision.max()) * scale + 0.5
            for edge in (lo, hi):
                ax.axvline(edge, color="w", linewidth=0.6, linestyle=":")
                ax.axhline(edge, color="w", linewidth=0.6, linestyle=":")
        ax.set_title(labels[key], fontsize=8)
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
    fig.suptitle("log10 share of each query's mass (dotted: the video's tokens)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
