"""Measurement hooks shared by the model and the benchmarks.

* :func:`region`: a named ``torch.profiler.record_function`` range. The model marks its parts
  with it (encoder, projector, splice, every layer by kind, every compression stage, prefill,
  decode), so a benchmark reads where the time goes from a profiler trace
  (:func:`region_totals`) instead of re-running the model piece by piece. Outside a profiler a
  range costs a few microseconds on the host and nothing on the device.
* :class:`Marks`: named time points, CUDA events on a GPU (no host sync in between) and
  ``perf_counter`` on the CPU.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch
from torch.profiler import record_function

PREFIX = "viper/"


def region(name: str) -> record_function:
    """A profiler range named ``viper/<name>`` (use as a context manager)."""
    return record_function(PREFIX + name)


def region_totals(events: Any) -> dict[str, dict[str, float]]:
    """Per ``viper/`` range of a finished profile (``prof.events()``), names without the prefix:

    * ``cpu_ms``: summed host time inside the range (on a GPU: time to launch its work);
    * ``device_ms``: summed time of the device kernels launched inside it (0 on a CPU run);
    * ``device_span_ms``: summed device-timeline spans of the range, first kernel start to last
      kernel end, idle gaps included (0 on a CPU run or where the profiler records none);
    * ``count``: how many times it ran.

    Ranges nest (``prefill`` holds the layers), so each figure includes its sub-ranges."""
    out: dict[str, dict[str, float]] = defaultdict(
        lambda: {"cpu_ms": 0.0, "device_ms": 0.0, "device_span_ms": 0.0, "count": 0.0}
    )
    for event in events:
        if not event.name.startswith(PREFIX):
            continue
        row = out[event.name[len(PREFIX) :]]
        if event.device_type == torch.autograd.DeviceType.CPU:
            row["cpu_ms"] += event.cpu_time_total / 1000.0
            row["device_ms"] += event.device_time_total / 1000.0
            row["count"] += 1
        else:  # the profiler's copy of the range on the device timeline
            row["device_span_ms"] += event.time_range.elapsed_us() / 1000.0
    return dict(out)


class Marks:
    """Named time points; CUDA events on a GPU (no host sync in between), ``perf_counter`` on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.points: list[tuple[str, Any]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append((name, event))
        else:
            self.points.append((name, time.perf_counter()))

    def elapsed_ms(self) -> dict[str, float]:
        """Milliseconds from the first mark to each later one (synchronises the device once)."""
        if self.cuda:
            torch.cuda.synchronize()
        first = self.points[0][1]
        out = {}
        for name, point in self.points[1:]:
            out[name] = first.elapsed_time(point) if self.cuda else (point - first) * 1000.0
        return out

    def intervals(self) -> list[tuple[str, float]]:
        """(name, milliseconds since the previous mark) for every mark after the first, in order
        (names may repeat, e.g. one per layer)."""
        if self.cuda:
            torch.cuda.synchronize()
        out = []
        for (_, before), (name, after) in zip(self.points, self.points[1:], strict=False):
            out.append((name, before.elapsed_time(after) if self.cuda else (after - before) * 1000.0))
        return out
