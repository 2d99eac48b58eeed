"""``EfficiencyMonitor``: prefill time and peak memory of the generations a run scores.

Measurement lives here, not in the model: before the first generating batch of the process the
callback runs one untimed generation (allocator growth, kernel selection and compilation are paid
there, as the benchmarks' warm-up does), then for every generating batch it resets the peak
memory counter, hands the module a :class:`~lightning_viper.ops.profiling.Marks` that
``VideoLM.generate`` marks (``start``, ``first_token``, ``decoded``) and logs

* ``{split}/eff/prefill_ms``: frames -> first token, per sample (CUDA events on a GPU, so no
  sync inside generation; one sync at the end of the batch reads them);
* ``{split}/eff/peak_mem_mb``: the device allocator's peak during the batch on a GPU, the
  process's peak resident set so far (``ru_maxrss``) on the CPU; logged as a max.

``VideoLM.configure_callbacks`` adds it to every run.
"""

from __future__ import annotations

import logging
import resource
import sys
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from lightning_viper.ops.profiling import Marks

log = logging.getLogger(__name__)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for :func:`peak_memory_mb` (waits for queued device work first)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory since :func:`reset_peak_memory` (CUDA), else the process's
    peak resident set (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


class EfficiencyMonitor(Callback):
    """Warm-up, prefill timing and peak memory around ``VideoLM.generate`` (see the module doc).

    ``last`` holds the figures of the latest timed batch (``prefill_ms``, ``decode_ms``,
    ``peak_mem_mb``, per-sample times), also when nothing is logged (predict)."""

    def __init__(self) -> None:
        self.warm = False
        self.last: dict[str, float] = {}

    def _generates(self, module: Any, split: str) -> bool:
        return split == "predict" or split in getattr(module, "generate_in", ())

    def _start(self, module: Any, batch: Any, split: str) -> None:  # module: a VideoLM
        if not self._generates(module, split):
            return
        if not self.warm:
            module.generate(batch)  # untimed: one-time costs stay out of prefill_ms
            self.warm = True
        reset_peak_memory(module.device)
        module.efficiency_marks = Marks(module.device)

    def _end(self, module: Any, batch: Any, split: str) -> None:
        marks: Marks | None = getattr(module, "efficiency_marks", None)
        module.efficiency_marks = None
        if marks is None or not marks.points:
            return
        times = marks.elapsed_ms()  # one sync: the batch's work is done
        bs = batch.batch_size
        self.last = {
            "prefill_ms": times["first_token"] / bs,
            "decode_ms": (times["decoded"] - times["first_token"]) / bs,
            "peak_mem_mb": peak_memory_mb(module.device),
        }
        if split == "predict":
            return
        module.log(f"{split}/eff/prefill_ms", self.last["prefill_ms"], batch_size=bs)
        module.log(f"{split}/eff/peak_mem_mb", self.last["peak_mem_mb"], batch_size=bs, reduce_fx="max")

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._start(pl_module, batch, "val")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._end(pl_module, batch, "val")

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._start(pl_module, batch, "test")

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._end(pl_module, batch, "test")

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._start(pl_module, batch, "predict")

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._end(pl_module, batch, "predict")
