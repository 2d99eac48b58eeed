"""Fixtures for comparison tests: a tiny comparison file over a stand-in base recipe, a sqlite MLflow store."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

BASE = """\
seed_everything: 0
trainer:
  max_steps: 3
  logger:
    class_path: lightning_viper.tracking.MLflowLogger
    init_args: {experiment_name: base, tracking_uri: sqlite:///elsewhere.db, tags: {owner: me}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: checkpoints/shared, monitor: val/loss}
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
model:
  class_path: lightning_viper.module.VideoLM
data:
  class_path: datamodules.SyntheticVideoDataModule
"""

SPEC = """\
name: tiny
base: base.yaml
experiment: compare-tiny
tracking_uri: {uri}
seeds: [0, 1]
frames: {{key: data.init_args.num_frames, values: [4, 8]}}
overrides: ["--trainer.limit_val_batches=1"]
strategies:
  - name: none
    compression: []
  - name: transv
    compression:
      - {{class_path: lightning_viper.compression.TransV, init_args: {{layer: 1, keep: 0.5}}}}
    projector: {{class_path: lightning_viper.projectors.MLPProjector, init_args: {{tokens_per_frame: null}}}}
"""


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # create the experiment here so its artifacts stay inside tmp_path
    MlflowClient(uri).create_experiment("compare-tiny", artifact_location=str(tmp_path / "artifacts"))
    return uri


@pytest.fixture
def spec_file(tmp_path: Path, tracking_uri: str) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC.format(uri=tracking_uri))
    return path
