"""A recipe's model with a checkpoint's weights, its eval batches and its MLflow store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lightning_viper.batch import VideoBatch
from lightning_viper.cli.main import recipe_name
from lightning_viper.inference import InferenceError, load_model
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


def load(recipe: str, ckpt_path: str, overrides: Sequence[str] = (), device: str = "auto") -> Loaded:
    """The recipe's VideoLM and datamodule (nothing trained, no MLflow run) with the checkpoint loaded strictly."""
    try:
        loaded = load_model(recipe, ckpt_path, overrides, device=device)
    except InferenceError as error:
        raise AnalysisInputError(str(error)) from None
    log.info("analysing %s with %s on %s", recipe, loaded.checkpoint, loaded.model.device)
    return Loaded(loaded.model, loaded.data, loaded.config, recipe_name(loaded.config), loaded.checkpoint)


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
