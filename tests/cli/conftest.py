"""Fixtures for end-to-end CLI runs of the demo recipe on tiny data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lightning_viper.cli.main import VideoCLI

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes" / "demo.yaml"


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic-data cache for the whole session (generated on first use)."""
    return tmp_path_factory.mktemp("synth")


def write_overlay(tmp_path: Path, synth_cache: Path, batch_size: int = 4) -> Path:
    """A config overlay that trims the demo and keeps its outputs (MLflow, checkpoints) in tmp_path."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        f"""
trainer:
  default_root_dir: {tmp_path / "runs"}
  log_every_n_steps: 1
  logger:
    class_path: lightning_viper.tracking.MLflowLogger
    init_args:
      experiment_name: demo-test
      tracking_uri: sqlite:///{tmp_path / "mlflow.db"}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path / "ckpt"}, save_last: true}}
    - class_path: lightning_viper.callbacks.seen_samples.SeenSamples
      init_args: {{directory: {tmp_path / "seen"}}}
    - class_path: lightning_viper.callbacks.PredictionWriter
      init_args: {{stages: [test, predict]}}
data:
  init_args:
    cache_dir: {synth_cache}
    num_train: 16
    num_val: 8
    num_test: 8
    num_frames: 8
    batch_size: {batch_size}
    num_workers: 0
    samples_per_shard: 8
"""
    )
    return overlay


@pytest.fixture
def demo_cli(tmp_path: Path, synth_cache: Path) -> Callable[..., VideoCLI]:
    """Run ``lightning <subcommand>`` on the demo recipe, trimmed, with its own MLflow store."""
    overlay = write_overlay(tmp_path, synth_cache)

    def run(subcommand: str, *overrides: str) -> VideoCLI:
        args = [subcommand, "--config", str(DEMO), "--config", str(overlay), *overrides]
        return VideoCLI(args=args)

    run.tmp_path = tmp_path  # type: ignore[attr-defined]
    return run
