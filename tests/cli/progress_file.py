"""A test-only callback for subprocess fits: writes the global step to a file after every batch,
and kills its own process with SIGKILL at the step named by ``$VIPER_TEST_KILL_AT`` (a ``kill -9``
at a known step)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer


class ProgressFile(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        kill_at = os.environ.get("VIPER_TEST_KILL_AT")
        self.kill_at = int(kill_at) if kill_at else None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(trainer.global_step))
        tmp.replace(self.path)
        if trainer.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
