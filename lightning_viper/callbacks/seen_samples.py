"""Record which sample keys each rank saw, per stage (to audit data sharding across ranks)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer

from lightning_viper.batch import VideoBatch


class SeenSamples(Callback):
    """Writes ``<directory>/seen-<stage>-rank<r>.json``: the keys of every sample the rank saw."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.keys: dict[str, list[str]] = defaultdict(list)

    def _record(self, stage: str, batch: Any) -> None:
        if isinstance(batch, VideoBatch):
            self.keys[stage].extend(str(m.get("key")) for m in batch.meta)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._record("train", batch)

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._record("val", batch)

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._record("test", batch)

    def _write(self, trainer: Trainer, stage: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"seen-{stage}-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.keys.get(stage, [])))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "train")
        self._write(trainer, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "test")
