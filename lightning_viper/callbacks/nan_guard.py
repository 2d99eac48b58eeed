"""Stop training on a non-finite loss or gradient norm, without ever saving the broken state.

A bad step is one whose loss or (pre-clipping) gradient norm is NaN or infinite, on any rank. On a
bad step the gradients are dropped before the optimizer runs, so weights and optimizer moments stay
those of the last good step (the learning-rate schedule still advances). ``patience`` consecutive
bad steps stop the fit with :class:`NonFiniteTrainingError`, which names the steps; the MLflow run
ends FAILED with the message in its ``failure_reason`` tag.

Checkpoints: while a run of bad steps is under way, or if any parameter is not finite, no
checkpoint is written: a save that comes due then stops the fit at once, so ``last.ckpt`` and the
best checkpoints on disk stay those written before the first bad step.

Steps are numbered as Lightning logs them: the batch logged at step ``s`` in MLflow is step ``s``
here (``trainer.global_step`` before that batch's optimizer step).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor
from torch.optim import Optimizer

from lightning_viper.tracking.mlflow import MLflowLogger

log = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Training stopped because the loss, the gradient norm or the weights were not finite."""


class NanGuard(Callback):
    """Skip non-finite steps, stop after ``patience`` consecutive ones, never checkpoint them.

    Args:
        patience: stop at this many consecutive bad steps (1: at the first bad step).
        skip_bad_steps: drop the gradients of a step whose gradient norm is not finite, so the
            optimizer leaves the weights unchanged. Off, the optimizer steps on them (the weights
            then usually become NaN and the next checkpoint save stops the fit).
    """

    def __init__(self, patience: int = 3, skip_bad_steps: bool = True) -> None:
        if patience < 1:
            raise ValueError(f"NanGuard(patience={patience}): patience counts consecutive bad steps; use 1 or more")
        self.patience = patience
        self.skip_bad_steps = skip_bad_steps
        self._step = 0  # step of the batch in flight (MLflow's step for its metrics)
        self._grad_norm: float | None = None  # this batch's gradient norm, before clipping
        self._streak: list[int] = []  # steps of the current run of bad steps
        self._what = ""  # what was not finite at the last bad step
        self._stop_step = -1  # the step named in the error, also tagged in MLflow

    # ---- per step ---------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step
        self._grad_norm = None

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False))
        local_ok = math.isfinite(norm)
        all_ok = trainer.strategy.reduce_boolean_decision(local_ok, all=True)  # the same choice on every rank
        self._grad_norm = norm if all_ok or not local_ok else float("nan")  # nan: another rank's norm was bad
        if not all_ok and self.skip_bad_steps:
            optimizer.zero_grad(set_to_none=True)  # the optimizer skips parameters without gradients

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        found = []
        if isinstance(loss, Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            found.append(f"loss {float(loss.detach().float().mean())}")
        if self._grad_norm is not None and not math.isfinite(self._grad_norm):
            found.append(f"gradient norm {self._grad_norm}")
        bad = trainer.strategy.reduce_boolean_decision(bool(found), all=False)  # any rank
        if not bad:
            self._streak.clear()
            return
        self._streak.append(self._step)
        self._what = ", ".join(found) or "non-finite on another rank"
        if len(self._streak) >= self.patience:
            raise NonFiniteTrainingError(self._message(trainer, self._streak_text(), f"patience is {self.patience}"))
        skipped = "optimizer step skipped" if self.skip_bad_steps else "optimizer stepped on it"
        log.warning(
            "step %d: %s; %s (%d of %d consecutive bad steps before training stops)",
            self._step,
            self._what,
            skipped,
            len(self._streak),
            self.patience,
        )

    # ---- checkpoints and failure ------------------------------------------------------------
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint from a non-finite state (raising stops the fit before any write)."""
        why = "a checkpoint came due and was not written"
        if self._streak:
            raise NonFiniteTrainingError(self._message(trainer, self._streak_text(), why))
        params = list(pl_module.named_parameters())
        if not params:
            return
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in params])  # (P,) one sync below
        if not bool(finite.all()):
            names = [name for (name, _), ok in zip(params, finite.tolist(), strict=True) if not ok]
            more = ", ..." if len(names) > 3 else ""
            what = f"non-finite weights in {len(names)} tensor(s): {', '.join(names[:3])}{more}"
            raise NonFiniteTrainingError(self._message(trainer, what, why))

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, NonFiniteTrainingError):
            return
        for logger in trainer.loggers:
            if isinstance(logger, MLflowLogger):
                logger.set_tags({"failure_reason": str(exception)[:5000], "nan_guard_step": self._stop_step})

    def _streak_text(self) -> str:
        first, last = self._streak[0], self._streak[-1]
        steps = f"step {last}" if first == last else f"steps {first}-{last}"
        return f"{self._what} ({len(self._streak)} consecutive bad step(s): {steps}; none written to a checkpoint)"

    def _message(self, trainer: Trainer, what: str, why: str) -> str:
        self._stop_step = self._streak[-1] if self._streak else trainer.global_step
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        kept = ", ".join(_checkpoints_on_disk(trainer)) or "none"
        return (
            f"training stopped at step {self._stop_step}: {what}; {why}. Checkpoints on disk: {kept}. "
            f"Find the cause (learning rate{f' now {lr:g}' if lr is not None else ''}, trainer.gradient_clip_val, "
            "the data at these steps, precision), then resume with --ckpt_path last or start again."
        )


def _checkpoints_on_disk(trainer: Trainer) -> list[str]:
    """The checkpoint files in the ModelCheckpoint directories."""
    dirs = {Path(d) for cb in trainer.checkpoint_callbacks if (d := getattr(cb, "dirpath", None))}
    return sorted(str(f) for d in dirs for f in d.glob("*.ckpt"))
