"""An overlay's callback list that jsonargparse merges into the recipe's by position is reported."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lightning_viper.cli.list_merge import positional_inheritance
from lightning_viper.cli.main import parse_recipe
from tests.cli.conftest import DEMO

SAME_LENGTH = """
trainer:
  callbacks:  # as many items as the demo recipe's list, ModelCheckpoint at the same index
    - class_path: lightning_viper.callbacks.NanGuard
      init_args: {patience: 3}
    - class_path: lightning_viper.callbacks.Preemption
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: ckpt, every_n_train_steps: 5}
    - class_path: lightning_viper.callbacks.PredictionWriter
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
"""


def test_a_same_length_overlay_is_reported_with_what_jsonargparse_carried_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(SAME_LENGTH)
    args = ["--config", str(DEMO), "--config", str(overlay)]
    (found,) = positional_inheritance(["fit", *args])
    assert (found.index, found.name, found.source, found.earlier) == (2, "ModelCheckpoint", str(overlay), str(DEMO))
    assert found.values == {"filename": "best-{step}", "monitor": "val/loss", "save_top_k": 1, "save_last": True}

    with caplog.at_level(logging.WARNING, logger="lightning_viper"):
        resolved = parse_recipe(DEMO, "--config", str(overlay)).trainer.callbacks[2].init_args
    for key, value in found.values.items():  # what the replay found is what jsonargparse did
        assert resolved[key] == value, key
    assert resolved.dirpath == "ckpt" and resolved.every_n_train_steps == 5
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "item 2 (ModelCheckpoint) keeps filename='best-{step}', monitor='val/loss'" in warning
    assert warning.startswith(f"trainer.callbacks: {overlay} gives a callback list as long as the one of {DEMO}")


def test_other_lengths_appends_and_classes_are_not_reported() -> None:
    five = [{"class_path": "lightning.pytorch.callbacks.Timer"}] * 5  # another class at every index: replaced
    two = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "x"}}] * 2
    for extra in (f"--trainer.callbacks={json.dumps(five)}", f"--trainer.callbacks={json.dumps(two)}"):
        assert positional_inheritance(["fit", "--config", str(DEMO), extra]) == []
    append = ["--trainer.callbacks+", json.dumps({"class_path": "ModelCheckpoint"})]
    assert positional_inheritance(["fit", "--config", str(DEMO), *append]) == []
