"""PredictionWriter: one JSONL line per sample from predict_step, attached to the MLflow run."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader

from lightning_viper.callbacks.predictions import PredictionWriter


class RowsModule(LightningModule):
    """predict_step/test_step return one dict per sample, like VideoLM's predict_step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def _rows(self, batch: torch.Tensor) -> list[dict[str, Any]]:
        return [
            {"key": f"s{int(x)}", "task": "count", "prediction": str(int(x)), "answer": "2", "score": float(x == 2)}
            for x in batch
        ]

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> list[dict[str, Any]]:
        return self._rows(batch)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> list[dict[str, Any]]:
        return self._rows(batch)


def _loader() -> DataLoader:
    return DataLoader(torch.arange(5), batch_size=2)


def _trainer(tmp_path: Path, callback: PredictionWriter, logger: Any = False) -> Trainer:
    return Trainer(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_writes_one_line_per_sample(tmp_path: Path) -> None:
    writer = PredictionWriter()
    _trainer(tmp_path, writer).predict(RowsModule(), _loader(), return_predictions=False)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["key"] for r in rows] == ["s0", "s1", "s2", "s3", "s4"]
    assert [r["score"] for r in rows] == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_test_stage_when_asked_and_path_template(tmp_path: Path) -> None:
    writer = PredictionWriter(path=str(tmp_path / "out" / "{stage}.jsonl"), stages=["test"])
    _trainer(tmp_path, writer).test(RowsModule(), _loader())
    assert len((tmp_path / "out" / "test.jsonl").read_text().splitlines()) == 5


def test_logs_artifact_to_mlflow(tmp_path: Path) -> None:
    logger = MLFlowLogger(
        experiment_name="preds",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
    )
    _trainer(tmp_path, PredictionWriter(), logger).predict(RowsModule(), _loader(), return_predictions=False)
    names = [a.path for a in logger.experiment.list_artifacts(logger.run_id)]
    assert names == ["predictions.jsonl"]


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(ValueError, match="stages"):
        PredictionWriter(stages=["train"])
