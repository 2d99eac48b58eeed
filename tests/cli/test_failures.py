"""What a failed run leaves behind: config errors create nothing, a full disk under the MLflow store
or the checkpoints stops training with a message, the run ends FAILED where the store can say so,
and the last good checkpoint stays loadable."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from lightning_viper.checkpoint_io import CheckpointWriteError
from lightning_viper.cli.guards import ConfigError
from lightning_viper.cli.main import VideoCLI
from lightning_viper.tracking.store import TrackingStoreError
from tests.cli.conftest import DEMO, ROOT, write_overlay
from tests.faults import fill_disk_under

OUT_OF_RANGE = '[{"class_path": "lightning_viper.compression.TransV", "init_args": {"layer": 9, "keep": 0.5}}]'
ON_MAMBA = (  # layer 0 of the demo's pattern M-*M-* is a Mamba-2 layer
    '[{"class_path": "lightning_viper.compression.TransV", '
    '"init_args": {"layer": 0, "keep": 0.5, "selector": "attention"}}]'
)


@pytest.mark.parametrize(
    ("compression", "message"),
    [(OUT_OF_RANGE, "layer 9 is out of range"), (ON_MAMBA, "needs an attention layer, but layer 0 is")],
)
def test_a_config_error_creates_nothing_and_says_why(
    demo_cli: Callable[..., VideoCLI], compression: str, message: str
) -> None:
    tmp: Path = demo_cli.tmp_path  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=message) as error:
        demo_cli("fit", f"--model.init_args.compression={compression}")
    assert "Namespace(" not in str(error.value)  # the constructor's message, not jsonargparse's dump
    assert not (tmp / "mlflow.db").exists()
    assert not (tmp / "ckpt").exists()


@pytest.mark.slow
def test_a_config_error_prints_the_message_alone(tmp_path: Path, synth_cache: Path) -> None:
    overlay = write_overlay(tmp_path, synth_cache)
    cmd = [sys.executable, "-m", "lightning_viper.cli.main", "fit", "--config", str(DEMO), "--config", str(overlay)]
    proc = subprocess.run(
        [*cmd, f"--model.init_args.compression={OUT_OF_RANGE}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "layer 9 is out of range for a backbone with 6 layers" in errors[0]
    assert not (tmp_path / "mlflow.db").exists()


def _disk_full() -> MlflowException:
    """What MLflow's sqlite store raises when its disk is full (the sqlite error wrapped twice)."""
    try:
        raise sqlite3.OperationalError("database or disk is full")
    except sqlite3.OperationalError as cause:
        error = MlflowException("(sqlite3.OperationalError) database or disk is full")
        error.__cause__ = cause
        return error


def _run(tmp: Path) -> Any:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo-test")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    return run


@pytest.mark.parametrize("status_writable", [True, False], ids=["status-written", "store-fully-stuck"])
def test_a_full_store_disk_stops_training_with_a_message(
    demo_cli: Callable[..., VideoCLI],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status_writable: bool,
) -> None:
    tmp: Path = demo_cli.tmp_path  # type: ignore[attr-defined]
    real_log_batch = SqlAlchemyStore.log_batch
    writes = {"metrics": 0}

    def log_batch(self: SqlAlchemyStore, run_id: str, metrics: Any, params: Any, tags: Any) -> None:
        if metrics:
            writes["metrics"] += 1
            if writes["metrics"] > 2:  # the disk fills up after two logging steps
                if not status_writable:  # ... so full that not even the run's end can be written
                    monkeypatch.setattr(SqlAlchemyStore, "update_run_info", stuck)
                    monkeypatch.setattr(SqlAlchemyStore, "set_tag", stuck)
                raise _disk_full()
        real_log_batch(self, run_id, metrics, params, tags)

    def stuck(*args: Any, **kwargs: Any) -> None:
        raise _disk_full()

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", log_batch)
    with caplog.at_level(logging.ERROR), pytest.raises(TrackingStoreError) as error:
        demo_cli("fit", "--trainer.max_steps=8", "--trainer.limit_val_batches=0")
    message = str(error.value)
    assert "log metrics at step" in message and "the disk is full" in message
    assert "free space under" in message and "--ckpt_path last" in message
    monkeypatch.undo()
    run = _run(tmp)
    if status_writable:
        assert run.info.status == "FAILED"
        assert "the disk is full" in run.data.tags["failure_reason"]
    else:  # nothing can be written: the run stays RUNNING, and the log says so
        assert run.info.status == "RUNNING"
        assert any("stays RUNNING" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_full_checkpoint_disk_keeps_the_last_good_checkpoint(
    demo_cli: Callable[..., VideoCLI], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp: Path = demo_cli.tmp_path  # type: ignore[attr-defined]
    every_2 = ["--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]
    demo_cli("fit", "--trainer.max_steps=2", *every_2)
    last = tmp / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    before = sorted(p.name for p in last.parent.iterdir())

    fill_disk_under(tmp / "ckpt", monkeypatch)
    with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*\(No space left on device\)"):
        demo_cli("fit", "--trainer.max_steps=4", "--ckpt_path=last", *every_2)
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == 2  # intact, not truncated
    after = sorted(p.name for p in last.parent.iterdir())
    assert after == before, "no new, partial or temporary checkpoint files"
    run = _run(tmp)
    assert run.info.status == "FAILED"
    assert json.loads((tmp / "ckpt" / "mlflow_run.json").read_text())["run_id"] == run.info.run_id
