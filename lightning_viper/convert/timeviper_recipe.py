"""The recipe ``viper convert`` writes next to a converted model: ``lightning test`` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lightning_viper.export.directory import TOKENIZER_DIR

HEADER = """\
# TimeViper checkpoint converted by `viper convert timeviper` (model: {root}).
# Test shards from `viper pack` under $VIPER_SHARDS/test/ (default ./shards/test/):
#   lightning test --config {recipe}
# Fine-tune: add `train:` / `val:` shards under data.init_args and run `lightning fit` with it.
"""


def recipe(root: Path, image_size: int, fps: float, max_frames: int, has_tokenizer: bool) -> dict[str, Any]:
    """The recipe as a dict: the exported model, the reference's frame sampling, shards from env."""
    absolute = str(root.resolve())
    tokenizer = f"{absolute}/{TOKENIZER_DIR}" if has_tokenizer else "${oc.env:VIPER_TOKENIZER}"
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "auto",
            "devices": 1,
            "precision": "${oc.env:VIPER_PRECISION,bf16-mixed}",
            "default_root_dir": f"{absolute}/runs",
            "logger": {
                "class_path": "lightning_viper.tracking.MLflowLogger",
                "init_args": {
                    "experiment_name": "timeviper_converted",
                    "tracking_uri": "${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}",
                },
            },
            "callbacks": [
                {"class_path": "lightning_viper.callbacks.NanGuard", "init_args": {"patience": 3}},
                {"class_path": "lightning_viper.callbacks.Preemption"},
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": f"{absolute}/checkpoints", "save_last": True},
                },
                {
                    "class_path": "lightning_viper.callbacks.PredictionWriter",
                    "init_args": {"stages": ["test", "predict"]},
                },
            ],
        },
        "model": {
            "class_path": "lightning_viper.export.PretrainedVideoLM",
            "init_args": {
                "path": absolute,
                "trainable": ["projector", "backbone", "compression"],
                "lr": 1.0e-5,
                "module_lr": {"compression": 5.0e-5},
                "max_new_tokens": 64,
                "generate_in": ["test"],
            },
        },
        "data": {
            "class_path": "datamodules.VideoDataModule",
            "init_args": {
                "test": "${oc.env:VIPER_SHARDS,shards}/test/*.tar",
                "tokenizer": tokenizer,
                "template": {"class_path": "lightning_viper.text.NemotronTemplate"},
                "image_size": image_size,
                "fps": fps,
                "max_frames": max_frames,
                "batch_size": 1,
            },
        },
    }


def write_recipe(root: Path, image_size: int, fps: float, max_frames: int, has_tokenizer: bool) -> Path:
    """Write ``root/recipe.yaml`` and return its path."""
    path = root / "recipe.yaml"
    body = yaml.safe_dump(recipe(root, image_size, fps, max_frames, has_tokenizer), sort_keys=False)
    path.write_text(HEADER.format(root=root.resolve(), recipe=path.resolve()) + body)
    return path
