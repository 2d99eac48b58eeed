"""Callbacks for subprocess CLI tests: log train keys as they are consumed, die by SIGKILL on cue."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer

from lightning_viper.batch import VideoBatch


class KillAt(Callback):
    """``kill -9`` this process at the start of the train step ``$VIPER_TEST_KILL_AT`` (if set):
    the checkpoint of the step before has been written, the step itself has not run."""

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = os.environ.get("VIPER_TEST_KILL_AT")
        if step is not None and trainer.global_step == int(step):
            os.kill(os.getpid(), signal.SIGKILL)


class KeyLog(Callback):
    """Appends one JSON line ``{"step", "keys"}`` per train batch to ``path`` (flushed each time)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if isinstance(batch, VideoBatch):
            with self.path.open("a") as f:
                f.write(json.dumps({"step": trainer.global_step, "keys": [m["key"] for m in batch.meta]}) + "\n")
