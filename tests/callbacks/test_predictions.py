"""PredictionWriter: one JSONL line per sample from predict_step, attached to the MLflow run."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader

from datamodules.video import VideoDataModule
from lightning_viper.callbacks.predictions import PredictionWriter
from tests.data.fixtures import annotation, good_sample, grey_video, make_shards


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
    assert sorted(names) == ["predictions.jsonl", "predictions.jsonl.summary.json"]
    assert logger.experiment.get_run(logger.run_id).data.metrics["predict/skipped_samples"] == 0.0


def test_predict_counts_skipped_samples(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    """Bad samples met by ``lightning predict`` are counted in the summary and in MLflow."""
    bad = [("cut", {"mp4": grey_video(2)[:50], "json": annotation()}), ("nojson", {"mp4": grey_video(2)})]
    (shard,) = make_shards(tmp_path / "shards", [[good_sample("a", 2), *bad, good_sample("b", 2)]])
    dm = VideoDataModule(predict=str(shard), tokenizer=str(demo_tokenizer_dir), image_size=8, batch_size=1)
    logger = MLFlowLogger(experiment_name="p", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    class Echo(RowsModule):
        def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
            return [{"key": m["key"]} for m in batch.meta]

    writer = PredictionWriter()
    _trainer(tmp_path, writer, logger).predict(Echo(), datamodule=dm, return_predictions=False)
    summary = json.loads((tmp_path / "predictions.jsonl.summary.json").read_text())
    assert summary == {"stage": "predict", "predictions": 2, "skipped_samples": 2}
    assert logger.experiment.get_run(logger.run_id).data.metrics["predict/skipped_samples"] == 2.0


def test_unknown_stage_is_rejected() -> None:
    with pytest.raises(ValueError, match="stages"):
        PredictionWriter(stages=["train"])
