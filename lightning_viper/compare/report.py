"""The comparison report: one table (Markdown and HTML) and a few PNG plots from run records."""

from __future__ import annotations

import html
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning_viper.compare.store import RunRecord

# (metric key, column title); scores are shown when any run logged them
SCORES = [
    ("test/mcq/acc", "MCQ acc"),
    ("test/grounding/miou", "grounding mIoU"),
    ("test/caption/cider", "caption CIDEr"),
    ("test/count/acc", "count acc"),
]
TOKENS_IN, TOKENS_FINAL = "test/eff/vision_tokens", "test/eff/vision_tokens_final"
PREFILL, MEMORY = "test/eff/prefill_ms", "test/eff/peak_mem_mb"
PARAMS_ADDED = "model/params_compression"
LAYER_MEAN, GFLOPS = "test/eff/vision_mean_per_layer", "test/eff/gflops_prefill"  # compare/budget.py
GFLOPS_LLM = "test/eff/gflops_llm"
PROFILE = "profile"  # the per-layer vision-token counts, as text
# budget columns, shown when some run logged them (after "kept")
BUDGET = [
    (PROFILE, "vision tokens by layer"),
    (LAYER_MEAN, "vision tokens per layer (mean)"),
    (GFLOPS, "prefill GFLOPs/sample"),
    (GFLOPS_LLM, "LLM GFLOPs/sample"),
]
_PER_LAYER = re.compile(r"^test/eff/vision_L(\d+)$")
EFFICIENCY = [
    (TOKENS_IN, "vision tokens in"),
    (TOKENS_FINAL, "vision tokens at last layer"),
    ("kept", "kept (fraction)"),
    (PREFILL, "prefill ms/sample"),
    (MEMORY, "peak memory MB"),
    (PARAMS_ADDED, "params added"),
]


@dataclass
class Row:
    """One strategy at one frame count, averaged over its seeds: key -> (mean, std or None)."""

    variant: str
    frames: str
    seeds: list[int]
    values: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    strategy: str = ""
    profile: str = ""  # vision tokens by layer, e.g. "32 → 16 @L1 → 3 @L5"


def layer_profile(per_layer: Sequence[float]) -> str:
    """Counts per layer as the first count and each change with the layer it starts at."""
    if not per_layer:
        return ""
    text = [f"{per_layer[0]:g}"]
    for layer in range(1, len(per_layer)):
        if per_layer[layer] != per_layer[layer - 1]:
            text.append(f"{per_layer[layer]:g} @L{layer}")
    return " → ".join(text)


def _profile(records: Sequence[RunRecord]) -> str:
    layers: dict[int, list[float]] = {}
    for rec in records:
        for key, value in rec.metrics.items():
            if m := _PER_LAYER.match(key):
                layers.setdefault(int(m.group(1)), []).append(value)
    if not layers:
        return ""
    return layer_profile([round(statistics.fmean(layers[i]), 1) for i in range(max(layers) + 1) if i in layers])


def _frames_order(frames: str) -> tuple[int, float | str]:
    try:
        return (0, float(frames))
    except ValueError:
        return (1, frames)


def aggregate(records: Sequence[RunRecord], order: Sequence[str] = ()) -> list[Row]:
    """Rows per (variant, frames) in ``order`` of variants (others after), frames ascending.

    ``kept`` is vision tokens at the last layer divided by the most vision tokens entering the LLM
    among the rows with the same frame count (the uncompressed strategy's count when it was run).
    """
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for rec in records:
        groups.setdefault((rec.variant, rec.frames), []).append(rec)
    rank = {name: i for i, name in enumerate(order)}
    keys = sorted(groups, key=lambda k: (rank.get(k[0], len(rank)), k[0], _frames_order(k[1])))
    rows = []
    for variant, frames in keys:
        recs = sorted(groups[(variant, frames)], key=lambda r: r.seed)
        row = Row(variant, frames, [r.seed for r in recs], strategy=recs[0].strategy)
        row.profile = _profile(recs)
        wanted = [k for k, _ in SCORES] + [TOKENS_IN, TOKENS_FINAL, PREFILL, MEMORY, LAYER_MEAN, GFLOPS, GFLOPS_LLM]
        for key in wanted:
            vals = [r.metrics[key] for r in recs if key in r.metrics]
            if vals:
                row.values[key] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)
        params = [float(r.params[PARAMS_ADDED]) for r in recs if PARAMS_ADDED in r.params]
        if params:
            row.values[PARAMS_ADDED] = (statistics.fmean(params), None)
        rows.append(row)
    for frames in {r.frames for r in rows}:
        same = [r for r in rows if r.frames == frames]
        reference = max((r.values[TOKENS_IN][0] for r in same if TOKENS_IN in r.values), default=0.0)
        for r in same:
            if reference > 0 and TOKENS_FINAL in r.values:
                r.values["kept"] = (r.values[TOKENS_FINAL][0] / reference, None)
    return rows


def _fmt(key: str, value: tuple[float, float | None] | None) -> str:
    if value is None or math.isnan(value[0]):
        return "–"
    mean, std = value
    if key == PARAMS_ADDED:
        return f"{round(mean):,}"
    if key in (GFLOPS, GFLOPS_LLM):
        return f"{mean:.4g}" if not std else f"{mean:.4g} ± {std:.2g}"
    digits = 3 if (key.startswith("test/") and "/eff/" not in key) or key == "kept" else 1
    if key == MEMORY:
        digits = 0
    text = f"{mean:.{digits}f}"
    return text if not std else f"{text} ± {std:.{digits}f}"  # no ± for one seed or identical values


def table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cell strings; score columns only for scores some run logged."""
    scores = [(k, t) for k, t in SCORES if any(k in r.values for r in rows)]
    sweep = len({r.frames for r in rows}) > 1 or any(r.frames != "recipe" for r in rows)
    budget = [(k, t) for k, t in BUDGET if any(r.profile if k == PROFILE else k in r.values for r in rows)]
    columns = scores + EFFICIENCY[:3] + budget + EFFICIENCY[3:]
    header = ["strategy", *(["frames"] if sweep else []), "seeds", *(t for _, t in columns)]
    body = []
    for r in rows:
        cells = [r.variant, *([r.frames] if sweep else []), str(len(r.seeds))]
        cells += [(r.profile or "–") if k == PROFILE else _fmt(k, r.values.get(k)) for k, _ in columns]
        body.append(cells)
    return header, body


def render_markdown(title: str, rows: Sequence[Row], plots: Sequence[Path], notes: Sequence[str]) -> str:
    header, body = table(rows)
    lines = [f"# {title}", "", *notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    described = [(r.variant, r.strategy) for r in rows if r.strategy]
    if described:
        lines += ["", "Strategies as the model describes them:", ""]
        lines += [f"- `{v}`: {s}" for v, s in dict(described).items()]
    lines += ["", *_NOTES, ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def render_html(title: str, rows: Sequence[Row], plots: Sequence[Path], notes: Sequence[str]) -> str:
    header, body = table(rows)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    trs = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body)
    described = dict((r.variant, r.strategy) for r in rows if r.strategy)
    items = "".join(f"<li><code>{esc(v)}</code>: {esc(s)}</li>" for v, s in described.items())
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "</style></head><body>\n"
        f"<h1>{esc(title)}</h1>\n"
        + "".join(f"<p>{esc(n)}</p>\n" for n in notes)
        + f"<table>\n<tr>{head}</tr>\n{trs}\n</table>\n"
        + (f"<p>Strategies as the model describes them:</p><ul>{items}</ul>\n" if items else "")
        + "".join(f"<p>{esc(n)}</p>\n" for n in _NOTES)
        + "".join(f"<img src='{esc(p.name)}' alt='{esc(p.stem)}'>\n" for p in plots)
        + "</body></html>\n"
    )


_NOTES = [
    "Scores are test-set means over seeds (± sample std when several seeds ran). Vision tokens are per "
    "sample; 'kept' is the tokens reaching the last layer over the most tokens entering the LLM among "
    "strategies at the same frame count. Prefill is wall time per sample; peak memory is CUDA peak "
    "allocation on GPU, the process's peak RSS on CPU. 'params added' counts compression-stage parameters.",
    "Budget (when logged): 'vision tokens by layer' is the count entering the LLM, then each change with "
    "the layer it starts at (from the backbone's stage records); the per-layer mean averages it over all "
    "layers; prefill GFLOPs (lightning_viper.bench.flops: matrix work of encoder, projector, every layer "
    "at its measured length, and the stages' scoring/transfer) is per sample, to the first token; the LLM "
    "part leaves out the encoder and projector.",
]
