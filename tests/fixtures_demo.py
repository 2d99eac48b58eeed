"""The trimmed demo recipe the CLI tests run, and one tiny trained checkpoint of it.

``tests/conftest.py`` turns these into session fixtures (``synth_cache``, ``tiny``); the CLI tests
import ``write_overlay`` and ``DEMO`` from ``tests/cli/conftest.py``, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo.yaml"


def write_overlay(tmp_path: Path, synth_cache: Path, batch_size: int = 4) -> Path:
    """A config overlay that trims the demo and keeps its outputs (MLflow, checkpoints) in tmp_path.

    Nothing else is written: the CLI creates ``tmp_path/mlflow.db`` (tests check that a config error
    leaves none).
    """
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


@dataclass(frozen=True)
class Tiny:
    """A trimmed demo fitted for 2 steps: its recipe, overlay and last checkpoint. Tests only read it."""

    recipe: Path  # the demo recipe
    overlay: Path  # its test overlay (data cache and outputs under the temporary directory)
    checkpoint: Path  # last.ckpt of a 2-step fit

    @property
    def tracking_uri(self) -> str:
        """The overlay's MLflow store (the fit's run; later runs on the checkpoint log there too)."""
        return f"sqlite:///{self.overlay.parent / 'mlflow.db'}"


def train_tiny(tmp: Path, synth_cache: Path) -> Tiny:
    """Fit the trimmed demo for 2 steps (seconds on a CPU) and return its recipe, overlay and last.ckpt."""
    from lightning_viper.cli.main import VideoCLI  # imported here: it takes seconds, and most tests never train

    overlay = write_overlay(tmp, synth_cache)
    VideoCLI(
        args=["fit", "--config", str(DEMO), "--config", str(overlay), "--trainer.max_steps=2",
              "--trainer.limit_val_batches=0"]
    )  # fmt: skip
    checkpoint = tmp / "ckpt" / "last.ckpt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"the tiny demo fit wrote no {checkpoint}: see the fit's log above")
    return Tiny(DEMO, overlay, checkpoint)
