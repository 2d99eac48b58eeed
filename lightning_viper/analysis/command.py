"""``viper analyze knockout|attention``: run an analysis on a recipe's checkpoint, write JSON and
PNG plots to ``--out`` and log them to an MLflow run in the recipe's store."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lightning_viper.analysis.edges import Flow
from lightning_viper.analysis.knockout import knockout, mixer_layers
from lightning_viper.analysis.load import AnalysisInputError, Loaded, Split, eval_batches, load, tracking_logger
from lightning_viper.analysis.maps import ClassRule, HeadCapture, MapRecorder
from lightning_viper.analysis.plots import heatmap_plot, knockout_plot, share_plot
from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.cli.guards import ConfigError
from lightning_viper.tracking import MLflowLogger

log = logging.getLogger(__name__)


def _loaded(recipe: str | None, ckpt_path: str, overrides: list[str] | None, device: str) -> Loaded:
    """The recipe's model with the checkpoint; bad input ends the command with its message (exit 2)."""
    try:
        return load(_required(recipe), ckpt_path, overrides or [], device)
    except (AnalysisInputError, ConfigError, CheckpointError) as error:
        log.error("%s", error)
        raise SystemExit(2) from None


def _required(recipe: str | None) -> str:
    if recipe is None:
        raise AnalysisInputError("pass the recipe the checkpoint was trained with: --config RECIPE")
    return recipe


def _out_dir(out: str | None, recipe: str, verb: str) -> Path:
    path = Path(out) if out else Path("reports") / "analysis" / f"{recipe}-{verb}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(data: Any, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def _log_run(
    logger: MLflowLogger | None, metrics: list[tuple[dict[str, float], int | None]], files: list[Path]
) -> None:
    if logger is None:
        return
    for values, step in metrics:
        logger.log_metrics(values, step)
    for f in files:
        logger.log_file(f, "analysis")
    logger.finalize("success")
    log.info("MLflow run %s (%s)", logger.run_id, logger._tracking_uri)


def analyze_knockout(
    recipe: str | None = None,
    ckpt_path: str = "last",
    out: str | None = None,
    flows: list[Flow] | None = None,
    layers: list[int] | None = None,
    split: Split = "test",
    max_samples: int | None = None,
    overrides: list[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Knock out vision -> instruction (V2I) and vision -> response (V2R) flow one layer at a time.

    Writes knockout.json and knockout.png (task score and answer loss vs layer) to OUT and logs
    them, with the curves as metrics, to the recipe's MLflow store.

    Args:
        recipe: the recipe YAML the checkpoint was trained with (on the command line: --config).
        ckpt_path: a checkpoint file, or last / best from the recipe's checkpoint folder.
        out: folder for the results (default: reports/analysis/RECIPE-VERB).
        flows: flows to block (V2I, V2R, V2T = vision -> every other token); default V2I and V2R.
        layers: layers to knock out; default every attention and Mamba-2 layer.
        split: the eval split of the recipe's datamodule.
        max_samples: stop after the batch that reaches this many samples (default: the whole split).
        overrides: dotted recipe overrides, e.g. ["--data.init_args.batch_size=4"].
        device: auto (CUDA if present), cpu or cuda.
    """
    loaded = _loaded(recipe, ckpt_path, overrides, device)
    batches = eval_batches(loaded.datamodule, split, max_samples)
    chosen = list(layers) if layers is not None else mixer_layers(loaded.model)
    wanted: list[Flow] = list(flows) if flows else ["V2I", "V2R"]
    out_dir = _out_dir(out, loaded.recipe, "knockout")
    with tqdm(total=len(batches) * (1 + len(chosen) * len(wanted)), desc="knockout", unit="batch") as bar:
        result = knockout(loaded.model, batches, chosen, wanted, tick=bar.update)
    data = {"recipe": recipe, "checkpoint": str(loaded.checkpoint), "split": split, **result.as_dict()}
    title = f"{loaded.recipe}: knockout of vision flow per layer ({result.baseline.samples} {split} samples)"
    files = [_write_json(data, out_dir / "knockout.json"), knockout_plot(data, title, out_dir / "knockout.png")]
    metrics: list[tuple[dict[str, float], int | None]] = [
        ({"knockout/baseline/score": result.baseline.score, "knockout/baseline/loss": result.baseline.loss}, None)
    ]
    metrics += [
        ({f"knockout/{p.flow}/score": p.score, f"knockout/{p.flow}/loss": p.loss}, p.layer) for p in result.points
    ]
    _log_run(
        tracking_logger(loaded.config, loaded.recipe, "knockout", {"checkpoint": str(loaded.checkpoint)}),
        metrics,
        files,
    )
    return {"out": str(out_dir), "baseline": data["baseline"], "points": len(result.points)}


def analyze_attention(
    recipe: str | None = None,
    ckpt_path: str = "last",
    out: str | None = None,
    split: Split = "test",
    max_samples: int | None = None,
    window: int = 8,
    local_mass: float = 0.5,
    sparse_fraction: float = 0.1,
    overrides: list[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Mixing matrices per layer and head: Mamba-2's implicit attention (with its time step) and the
    attention layers' softmax; shares of vision / instruction / other keys; head classes.

    Writes attention.json, shares.png and heads.png to OUT and logs them to the recipe's MLflow store.

    Args:
        recipe: the recipe YAML the checkpoint was trained with (on the command line: --config).
        ckpt_path: a checkpoint file, or last / best from the recipe's checkpoint folder.
        out: folder for the results (default: reports/analysis/RECIPE-VERB).
        split: the eval split of the recipe's datamodule.
        max_samples: stop after the batch that reaches this many samples (default: the whole split).
        window: keys counted as local (the query's most recent ones, itself included).
        local_mass: a head is local when this share of its mass is local.
        sparse_fraction: a head is sparse when 90% of its mass sits on at most this fraction of keys.
        overrides: dotted recipe overrides, e.g. ["--data.init_args.batch_size=4"].
        device: auto (CUDA if present), cpu or cuda.
    """
    loaded = _loaded(recipe, ckpt_path, overrides, device)
    batches = eval_batches(loaded.datamodule, split, max_samples)
    model = loaded.model
    rule = ClassRule(window, local_mass, sparse_fraction)
    recorder = MapRecorder(model.backbone.layer_kinds, window)
    mixers = {i: recorder for i in mixer_layers(model)}
    with torch.no_grad():
        for batch in tqdm(batches, desc="attention maps", unit="batch"):
            model(batch.to(model.device), mixers=mixers)
        layers = [recorder.stats[i].summary(i, rule) for i in sorted(recorder.stats)]
        heads = pick_heads(layers)
        capture = HeadCapture({})
        for layer, head, _ in heads:
            capture.heads.setdefault(layer, []).append(head)
        model(batches[0].to(model.device), mixers={i: capture for i in mixer_layers(model)})
    out_dir = _out_dir(out, loaded.recipe, "attention")
    counts = {c: sum(h["class"] == c for lay in layers for h in lay["heads"]) for c in ("local", "sparse", "global")}
    data = {"recipe": recipe, "checkpoint": str(loaded.checkpoint), "split": split, "rule": rule.__dict__,
            "classes": counts, "layers": layers}  # fmt: skip
    labels = {(lay, h): f"layer {lay} head {h}: {why}" for lay, h, why in heads}
    files = [
        _write_json(data, out_dir / "attention.json"),
        share_plot(layers, f"{loaded.recipe}: where text queries take from", out_dir / "shares.png"),
    ]
    if capture.matrices:
        files.append(heatmap_plot(capture.matrices, labels, capture.kinds, out_dir / "heads.png"))
    metrics: list[tuple[dict[str, float], int | None]] = [({f"heads/{c}": float(n) for c, n in counts.items()}, None)]
    for lay in layers:
        for query, shares in lay["shares"].items():
            metrics.append(({f"share/{query}_to_{g}": v for g, v in shares.items()}, lay["layer"]))
    _log_run(
        tracking_logger(loaded.config, loaded.recipe, "attention", {"checkpoint": str(loaded.checkpoint)}),
        metrics,
        files,
    )
    return {"out": str(out_dir), "classes": counts}


def pick_heads(layers: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """A few heads to draw: per class, its clearest Mamba-2 example, plus the attention head whose
    instruction queries look at the video most."""
    picks: list[tuple[int, int, str]] = []
    mamba = [(lay["layer"], h) for lay in layers if lay["kind"] == "mamba" for h in lay["heads"]]
    for cls, key, sign in (("local", "local_mass", -1), ("sparse", "k90_fraction", 1), ("global", "k90_fraction", -1)):
        members = [(layer, h) for layer, h in mamba if h["class"] == cls]
        if members:
            layer, h = min(members, key=lambda m: sign * m[1][key])
            picks.append((layer, h["head"], f"Mamba-2, {cls}"))
    attention = [lay for lay in layers if lay["kind"] in ("attention", "decoder")]
    if attention:
        lay = attention[0]
        h = max(lay["heads"], key=lambda h: h["instruction_to_vision"])
        picks.append((lay["layer"], h["head"], f"attention, {h['class']}"))
    return picks
