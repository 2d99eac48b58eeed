"""Per-run config patches and the ``lightning fit``/``test`` command lines of a comparison.

Each run gets a small YAML layered on the base recipe (``--config base --config patch``): its own
seed, compression, projector, frame count, MLflow experiment/run name/tags, output folder and
checkpoint folder, so runs never share checkpoints and ``--ckpt_path last`` finds this run's.
An evaluation-only run (``train: false``) instead loads encoder, projector and backbone from the
comparison's checkpoint (``model.init_args.init_from``) and is a ``lightning test`` without
``--ckpt_path``: its own MLflow run, the stages fresh. Every run gets a ``BudgetLogger``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from lightning_viper.compare.spec import CompareSpec, Variant

LOGGER_CLASS = "lightning_viper.tracking.mlflow.MLflowLogger"
CHECKPOINT_CLASS = "lightning.pytorch.callbacks.ModelCheckpoint"
BUDGET_CLASS = "lightning_viper.compare.budget.BudgetLogger"
LOADED_PARTS = ["encoder", "projector", "backbone"]  # from the checkpoint in evaluation-only runs
TAG_COMPARE, TAG_VARIANT, TAG_SEED, TAG_FRAMES = "compare", "variant", "seed", "frames"


def run_tags(spec: CompareSpec, variant: Variant) -> dict[str, str]:
    """MLflow tags that identify a run of this comparison."""
    return {
        TAG_COMPARE: spec.name,
        TAG_VARIANT: variant.strategy.name,
        TAG_SEED: str(variant.seed),
        TAG_FRAMES: variant.frames_tag,
    }


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted!r}: {part!r} is not a mapping in the patch")
    node[leaf] = value


def _callbacks(base_config: dict[str, Any], ckpt_dir: Path) -> list[dict[str, Any]]:
    """The base recipe's callbacks with every ModelCheckpoint writing (last.ckpt included) to ``ckpt_dir``."""
    callbacks = copy.deepcopy((base_config.get("trainer") or {}).get("callbacks") or [])
    if isinstance(callbacks, dict):
        callbacks = [callbacks]
    checkpoints = [cb for cb in callbacks if str(cb.get("class_path", "")).endswith("ModelCheckpoint")]
    if not checkpoints:
        callbacks.append({"class_path": CHECKPOINT_CLASS, "init_args": {"save_top_k": 0}})
        checkpoints = callbacks[-1:]
    for i, cb in enumerate(checkpoints):
        init = cb.setdefault("init_args", {}) or {}
        cb["init_args"] = init
        init["dirpath"] = str(ckpt_dir if i == 0 else ckpt_dir / f"extra{i}")
    checkpoints[0]["init_args"]["save_last"] = True
    callbacks.append({"class_path": BUDGET_CLASS})
    return callbacks


def patch_config(
    spec: CompareSpec,
    variant: Variant,
    run_dir: Path,
    parent_run_id: str | None,
    checkpoint: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The YAML mapping layered on the base recipe for one run; ``checkpoint``: the weights an
    evaluation-only run loads."""
    base_logger = (spec.base_config.get("trainer") or {}).get("logger")
    logger: dict[str, Any] = {"class_path": LOGGER_CLASS, "init_args": {}}
    if isinstance(base_logger, dict) and str(base_logger.get("class_path", "")).endswith("MLflowLogger"):
        logger = copy.deepcopy(base_logger)
        logger["init_args"] = dict(logger.get("init_args") or {})
    tags = {str(k): str(v) for k, v in (logger["init_args"].get("tags") or {}).items()}
    tags.update(run_tags(spec, variant))
    tags.update(extra_tags or {})
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    logger["init_args"].update(
        experiment_name=spec.experiment,
        tracking_uri=spec.tracking_uri,
        run_name=f"{spec.name}-{variant.key}",
        tags=tags,
    )
    logger["init_args"].pop("run_id", None)
    model: dict[str, Any] = {}
    if variant.strategy.compression is not None:
        model["compression"] = copy.deepcopy(variant.strategy.compression)
    if checkpoint is not None:
        model.update(init_from=str(checkpoint), init_parts=list(LOADED_PARTS))
    if variant.strategy.projector is not None:
        model["projector"] = copy.deepcopy(variant.strategy.projector)
    patch: dict[str, Any] = {
        "seed_everything": variant.seed,
        "trainer": {
            "default_root_dir": str(run_dir),
            "logger": logger,
            "callbacks": _callbacks(spec.base_config, run_dir / "checkpoints"),
        },
        "model": {"init_args": model},
    }
    if spec.frames_key is not None and variant.frames is not None:
        _set_dotted(patch, spec.frames_key, variant.frames)
    return patch


def write_patch(
    spec: CompareSpec,
    variant: Variant,
    run_dir: Path,
    parent_run_id: str | None,
    checkpoint: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Path:
    """Write the run's patch YAML to ``run_dir/compare.yaml`` and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "compare.yaml"
    patch = patch_config(spec, variant, run_dir, parent_run_id, checkpoint, extra_tags)
    path.write_text(yaml.safe_dump(patch, sort_keys=False))
    return path


def lightning_command(subcommand: str, spec: CompareSpec, patch: Path, overrides: list[str]) -> list[str]:
    """``python -m lightning_viper.cli.main <fit|test> --config base --config patch <overrides>``.

    ``test`` adds ``--ckpt_path last``: the run's own last checkpoint, and the CLI continues the
    fit's MLflow run recorded next to it. Not in an evaluation-only comparison (``spec.train``
    false): there the patch names the weights and the test is a run of its own.
    """
    if subcommand not in ("fit", "test"):
        raise ValueError(f"subcommand must be 'fit' or 'test', got {subcommand!r}")
    cmd = [sys.executable, "-m", "lightning_viper.cli.main", subcommand, "--config", str(spec.base)]
    cmd += ["--config", str(patch), *spec.overrides, *overrides]
    if subcommand == "test" and spec.train:
        cmd += ["--ckpt_path", "last"]
    return cmd
