"""Write generated answers to JSONL (one line per sample) and attach the file to the MLflow run."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import MLFlowLogger
from torch import Tensor

log = logging.getLogger(__name__)

STAGES = ("predict", "test")


def _jsonable(value: Any) -> Any:
    """Tensors and numpy values to plain Python; containers converted recursively."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


class PredictionWriter(Callback):
    """Collects the rows a module returns per batch and writes them as JSONL at the end of the stage.

    ``predict_step`` (and, when ``"test"`` is in ``stages``, ``test_step``) must return a list of
    dicts, one per sample, e.g. ``{"key", "task", "question", "prediction", "answer", "score"}``,
    or a dict holding that list under ``"predictions"`` (as ``VideoLM.test_step`` does); other
    outputs (such as a bare loss) are ignored. With several processes the rows are gathered
    to rank 0, which writes the file. The file is also logged as an artifact to every
    MLFlowLogger of the trainer. Samples the datamodule skipped as bad input (``VideoBatch.skipped``)
    are counted too: logged, written to ``<file>.summary.json`` beside the file, and logged to MLflow
    as the metric ``<stage>/skipped_samples``.

    Args:
        path: output file; default ``<trainer.default_root_dir>/predictions.jsonl`` for predict and
            ``predictions-test.jsonl`` for test. ``{stage}`` in the path is replaced by the stage.
        stages: which stages to record, a subset of ("predict", "test").
    """

    def __init__(self, path: str | None = None, stages: Sequence[str] = ("predict",)) -> None:
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"PredictionWriter stages must be in {STAGES}, got {sorted(unknown)}")
        self.path = path
        self.stages = tuple(stages)
        self.rows: list[dict[str, Any]] = []
        self.skipped = 0
        self.written: dict[str, Path] = {}

    def output_path(self, trainer: Trainer, stage: str) -> Path:
        """Where the rows of ``stage`` go."""
        if self.path is not None:
            return Path(self.path.replace("{stage}", stage))
        name = "predictions.jsonl" if stage == "predict" else f"predictions-{stage}.jsonl"
        return Path(trainer.default_root_dir) / name

    def _collect(self, stage: str, outputs: Any, batch: Any) -> None:
        self.skipped += int(getattr(batch, "skipped", 0))
        if isinstance(outputs, dict):  # e.g. VideoLM.test_step: {"loss", "predictions"}
            outputs = outputs.get("predictions")
        if stage in self.stages and isinstance(outputs, list):
            self.rows.extend(_jsonable(row) for row in outputs if isinstance(row, dict))

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows, self.skipped = [], 0

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows, self.skipped = [], 0

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("predict", outputs, batch)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("test", outputs, batch)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "predict")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.stages:
            self._write(trainer, "test")

    def _gather(self) -> tuple[list[dict[str, Any]], int]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.rows, self.skipped
        gathered: list[tuple[list[dict[str, Any]], int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self.rows, self.skipped))
        parts = [part for part in gathered if part is not None]
        return [row for rows, _ in parts for row in rows], sum(n for _, n in parts)

    def _write(self, trainer: Trainer, stage: str) -> None:
        rows, skipped = self._gather()
        self.rows, self.skipped = [], 0
        if not trainer.is_global_zero:
            return
        path = self.output_path(trainer, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        summary = path.with_name(path.name + ".summary.json")
        summary.write_text(json.dumps({"stage": stage, "predictions": len(rows), "skipped_samples": skipped}))
        self.written[stage] = path
        log.info("wrote %d %s predictions to %s (%d bad samples skipped)", len(rows), stage, path, skipped)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(path))
                logger.experiment.log_artifact(logger.run_id, str(summary))
                logger.experiment.log_metric(logger.run_id, f"{stage}/skipped_samples", float(skipped))


__all__ = ["PredictionWriter"]
