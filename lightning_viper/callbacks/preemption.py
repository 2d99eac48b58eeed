"""Preemption: stop cleanly on SIGTERM / SIGINT, and resume into the same MLflow run.

On SIGTERM or a first SIGINT (Ctrl+C) the current step finishes (Lightning's own SIGTERM path:
``trainer.received_sigterm`` makes the loops raise ``SIGTERMException`` between steps), then
``last.ckpt`` is written in the ModelCheckpoint directory at the current step (under a temporary
name, then renamed), the MLflow run ends KILLED with ``killed_by`` / ``killed_at_step`` tags, and
the process exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). A second SIGINT stops
at once: no checkpoint, run KILLED, exit 1.

A signal sent to the whole process group (a terminal's Ctrl+C, SLURM's preemption) also reaches
DataLoader workers: torch's workers die on SIGTERM, and torch's SIGCHLD handler in the main
process would then raise in the middle of the step. After the first signal that handler is set
replaced by a no-op, so the step finishes and the fit stops as above; the fit needs no further
batch from the dead worker.

A fit resumed from a checkpoint (``--ckpt_path last``) into the run recorded next to the
checkpoints is marked with :meth:`MLflowLogger.resume_fit`: RUNNING again, interruption tags, and
no metric step logged twice.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_viper.callbacks.nan_guard import NonFiniteTrainingError
from lightning_viper.tracking.mlflow import MLflowLogger

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _child_exited(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD after a preemption signal: nothing to do (a no-op handler rather than SIG_DFL, so a
    SIGCHLD already pending finds a handler)."""


class Preemption(Callback):
    """Checkpoint and mark the run KILLED on SIGTERM/SIGINT; continue the run on resume."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._trainer: Trainer | None = None
        self._pid = os.getpid()
        self._lightning_handler: Any = None  # Lightning's SIGTERM handler, called by ours

    # ---- signals ----------------------------------------------------------------------------
    def _install(self, trainer: Trainer) -> None:
        """Route SIGTERM and SIGINT through Lightning's SIGTERM handler (registered by now).

        Lightning registers it in the main thread, outside Windows; elsewhere nothing changes.
        Lightning restores the previous handlers when the trainer tears down.
        """
        current = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is not threading.main_thread() or current == self._handle:
            return
        if not callable(current):
            log.warning("Lightning registered no SIGTERM handler: SIGTERM/SIGINT keep their default behaviour")
            return
        self._trainer, self._pid, self._lightning_handler = trainer, os.getpid(), current
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the main process stops the workers itself
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:
                log.warning("second SIGINT: stopping now, without saving a checkpoint")
                raise KeyboardInterrupt
            return
        self.signum = signum
        if hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, _child_exited)  # a worker dying of this signal must not end the step
        step = self._trainer.global_step if self._trainer is not None else -1
        log.warning(
            "received %s at step %d: stopping after this step and saving a checkpoint (Ctrl+C again stops at once)",
            name,
            step,
        )
        self._lightning_handler(signum, frame)  # sets trainer.received_sigterm (and tells DDP ranks)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)
        if trainer.ckpt_path is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, MLflowLogger) and logger.continues_run:
                logger.resume_fit(trainer.global_step)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == "fit":
            return
        for logger in trainer.loggers:  # a test of a fit's checkpoint logs at the checkpoint's step
            if isinstance(logger, MLflowLogger) and logger.keeps_status:
                logger.log_at_step(int(checkpoint.get("global_step", 0)))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)  # also covers the sanity check, which runs before on_train_start

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    # ---- stopping ---------------------------------------------------------------------------
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        forced = isinstance(exception, KeyboardInterrupt)
        if not (isinstance(exception, SIGTERMException) or forced):
            return
        signum = signal.SIGINT if forced else (self.signum or signal.SIGTERM)
        name = signal.Signals(signum).name
        step = trainer.global_step
        if forced:
            saved, outcome = None, "stopped at once by KeyboardInterrupt (a second Ctrl+C); no checkpoint saved"
        elif trainer.state.fn != "fit" or trainer.sanity_checking:
            saved, outcome = None, f"stopped during {trainer.state.stage}; nothing to save"
        else:
            saved, outcome = self._save_last(trainer)
        for logger in trainer.loggers:
            if isinstance(logger, MLflowLogger) and not logger.keeps_status:  # not a test in a fit's run
                logger.set_tags({"killed_by": f"{name}: {outcome}"[:5000], "killed_at_step": step})
                logger.mark_final_status("KILLED")
        if isinstance(exception, SIGTERMException):
            exception.code = 128 + int(signum)  # Lightning leaves it None: the process would exit 0
        resume = " Resume with the same command and --ckpt_path last." if saved is not None else ""
        log.warning("%s at step %d: %s; MLflow run marked KILLED.%s", name, step, outcome, resume)

    def _save_last(self, trainer: Trainer) -> tuple[Path | None, str]:
        """Write ``last.ckpt`` in the first ModelCheckpoint's directory: a temporary file, then a rename."""
        cb = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)
        if cb is None or cb.dirpath is None:
            return None, "no checkpoint saved: the trainer has no ModelCheckpoint callback with a dirpath"
        path = Path(cb.last_model_path or Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        previous = cb.last_model_path
        cb.last_model_path = str(path)  # the saved ModelCheckpoint state names this file as the last one
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # full state: resumable
            if trainer.is_global_zero:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        except (OSError, RuntimeError, NonFiniteTrainingError) as error:
            cb.last_model_path = previous
            if trainer.is_global_zero:
                tmp.unlink(missing_ok=True)
            log.error("saving %s failed: %s", path, error, exc_info=not isinstance(error, NonFiniteTrainingError))
            return None, f"no checkpoint saved ({type(error).__name__}: {error}); {path} is unchanged"
        return path, f"checkpoint saved to {path} at step {trainer.global_step}"
