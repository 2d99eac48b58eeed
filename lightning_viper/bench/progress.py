"""Progress of a long benchmark run, logged from inside the backbone's layer loop.

A 204,800-frame chunked prefill takes over five minutes and logs nothing until its row is done;
cut off by a time limit, it leaves no trace of how far it got. :class:`LayerProgress` hooks every
layer of a backbone and logs, at most every ``every_s`` seconds, the layer reached, the time since
the run began and the memory allocated. Host-side: the GPU may still be working on queued layers.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from lightning_viper.backbones.base import Backbone

log = logging.getLogger(__name__)


class LayerProgress:
    """``with LayerProgress(backbone, every_s, label):`` logs 'label: layer i/N after t s, x GiB'."""

    def __init__(self, backbone: Backbone, every_s: float, label: str) -> None:
        self.backbone, self.every_s, self.label = backbone, every_s, label
        self.handles: list[RemovableHandle] = []
        self.start = self.last = 0.0

    def __enter__(self) -> LayerProgress:
        self.start = self.last = time.monotonic()
        n = self.backbone.num_layers
        for i in range(n):
            layer = self.backbone.layer_at(i)
            if not isinstance(layer, torch.nn.Module):
                raise TypeError(f"LayerProgress hooks nn.Module layers; layer {i} is {type(layer).__name__}")
            self.handles.append(layer.register_forward_pre_hook(self._hook(i, n)))
        return self

    def _hook(self, index: int, total: int) -> Any:
        def hook(module: torch.nn.Module, args: Any) -> None:
            now = time.monotonic()
            if now - self.last < self.every_s:
                return
            self.last = now
            gib = torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
            log.info(
                "%s: layer %d/%d after %.0f s, %.1f GiB allocated", self.label, index, total, now - self.start, gib
            )

        return hook

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
