"""A recipe's model with a checkpoint's weights, its eval batches and its MLflow store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_viper.backbones.loading import load_strict
from lightning_viper.batch import VideoBatch
from lightning_viper.checkpoint_io import load_checkpoint
from lightning_viper.cli.guards import checkpoint_dirpath, resolve_best
from lightning_viper.cli.main import VideoCLI, recipe_name
from lightning_viper.module import VideoLM
from lightning_viper.tracking import MLflowLogger

log = logging.getLogger(__name__)
Split = Literal["test", "val"]


class AnalysisInputError(ValueError):
    """The recipe, checkpoint or eval split cannot be used; the message says what to fix."""


@dataclass
class Loaded:
    model: VideoLM
    datamodule: Any
    config: Any  # the parsed recipe
    recipe: str  # its name (as MLflow run names use it)
    checkpoint: Path


def resolve_checkpoint(config: Any, ckpt_path: str) -> Path:
    """``last`` / ``best`` (in the recipe's ModelCheckpoint dirpath) or a file."""
    if ckpt_path in ("last", "best"):
        dirpath = checkpoint_dirpath(config)
        if ckpt_path == "best":
            return resolve_best(dirpath)
        lasts = sorted(dirpath.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if dirpath else []
        if not lasts:
            raise AnalysisInputError(
                f"--ckpt_path last: no last*.ckpt in {dirpath or 'the recipe (no ModelCheckpoint dirpath)'}; "
                "train the recipe first (lightning fit --config RECIPE) or pass a checkpoint file"
            )
        return lasts[-1]
    path = Path(ckpt_path)
    if not path.is_file():
        raise AnalysisInputError(f"--ckpt_path {ckpt_path}: no such file; pass a checkpoint file, 'last' or 'best'")
    return path


def load(recipe: str, ckpt_path: str, overrides: Sequence[str] = (), device: str = "auto") -> Loaded:
    """Build the recipe's VideoLM and datamodule (nothing trained) and load the checkpoint strictly."""
    if not Path(recipe).is_file():
        raise AnalysisInputError(f"--config {recipe}: no such recipe file")
    cli = VideoCLI(args=["--config", recipe, *overrides], run=False)
    if not isinstance(cli.model, VideoLM):
        raise AnalysisInputError(f"{recipe} builds a {type(cli.model).__name__}, not a VideoLM")
    path = resolve_checkpoint(cli.config, ckpt_path)
    state = load_checkpoint(path, "--ckpt_path checkpoint").get("state_dict")
    if state is None:
        raise AnalysisInputError(f"{path} has no 'state_dict': not a Lightning checkpoint of this project")
    load_strict(cli.model, state, source=str(path))
    target = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    model = cli.model.to(target).eval()
    model.tokenizer = cli.datamodule.tokenizer
    log.info("analysing %s with %s on %s", recipe, path, target)
    return Loaded(model, cli.datamodule, cli.config, recipe_name(cli.config), path)


def eval_batches(datamodule: Any, split: Split, max_samples: int | None) -> list[VideoBatch]:
    """The split's batches (whole batches until ``max_samples`` samples are reached), kept in memory
    because every knockout setting runs over the same batches."""
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "validate")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    batches: list[VideoBatch] = []
    seen = 0
    for batch in loader:
        batches.append(batch)
        seen += batch.batch_size
        if max_samples is not None and seen >= max_samples:
            break
    if not batches:
        raise AnalysisInputError(f"the recipe's {split} split is empty: point its data at an eval set")
    return batches


def tracking_logger(config: Any, recipe: str, verb: str, tags: dict[str, str]) -> MLflowLogger | None:
    """An MLflowLogger on the recipe's store and experiment, run ``<recipe>-analyze-<verb>``; None
    (with a warning) when the recipe logs elsewhere."""
    logger = config.get("trainer", {}).get("logger")
    if not logger or not str(logger.get("class_path", "")).endswith("MLflowLogger"):
        log.warning("the recipe has no MLflowLogger: results are written to --out only")
        return None
    init = logger.get("init_args") or {}
    return MLflowLogger(
        experiment_name=str(init.get("experiment_name", "lightning-viper")),
        tracking_uri=str(init.get("tracking_uri", "sqlite:///mlflow.db")),
        run_name=f"{recipe}-analyze-{verb}",
        tags={"analysis": verb, "recipe": recipe, **tags},
    )
