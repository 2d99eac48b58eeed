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
    MLFlowLogger of the trainer.

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
        self.written: dict[str, Path] = {}

    def output_path(self, trainer: Trainer, stage: str) -> Path:
        """Where the rows of ``stage`` go."""
        if self.path is not None:
            return Path(self.path.replace("{stage}", stage))
        name = "predictions.jsonl" if stage == "predict" else f"predictions-{stage}.jsonl"
        return Path(trainer.default_root_dir) / name

    def _collect(self, stage: str, outputs: Any) -> None:
        if isinstance(outputs, dict):  # e.g. VideoLM.test_step: {"loss", "predictions"}
            outputs = outputs.get("predictions")
        if stage in self.stages and isinstance(outputs, list):
            self.rows.extend(_jsonable(row) for row in outputs if isinstance(row, dict))

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows = []

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("predict", outputs)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("test", outputs)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "predict")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.stages:
            self._write(trainer, "test")

    def _gather(self) -> list[dict[str, Any]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.rows
        gathered: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.rows)
        return [row for part in gathered for row in part or []]

    def _write(self, trainer: Trainer, stage: str) -> None:
        rows = self._gather()
        self.rows = []
        if not trainer.is_global_zero:
            return
        path = self.output_path(trainer, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.written[stage] = path
        log.info("wrote %d %s predictions to %s", len(rows), stage, path)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(path))


__all__ = ["PredictionWriter"]
