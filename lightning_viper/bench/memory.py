"""Where the peak of a CUDA run goes: the tensors alive at the moment of the highest allocation,
grouped by the line of our code that allocated them.

:func:`trace_peak` records the CUDA caching allocator's history (``torch.cuda.memory``'s
``_record_memory_history``, Python stacks) around a block, replays the alloc / free events to
find the peak, and reports what was alive then: memory allocated before the block started
(weights, caller's tensors) as one line, and every block allocated inside it by the innermost
``lightning_viper`` frame of its stack.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclass
class PeakReport:
    """The peak of a traced block: ``before`` bytes alive when it started, ``peak`` bytes at its
    highest point, and ``by_site`` the bytes alive at the peak per allocating line of our code."""

    before: int = 0
    peak: int = 0
    by_site: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def table(self, rows: int = 20) -> str:
        lines = [
            f"peak allocated {self.peak / GIB:.2f} GiB = {self.before / GIB:.2f} GiB alive before the block "
            f"+ {(self.peak - self.before) / GIB:.2f} GiB allocated inside it ({self.events} allocator events)",
            f"{'GiB':>8}  allocated at (innermost lightning_viper frame)",
        ]
        for site, size in sorted(self.by_site.items(), key=lambda kv: -kv[1])[:rows]:
            lines.append(f"{size / GIB:8.2f}  {site}")
        return "\n".join(lines)


def _site(frames: list[dict[str, Any]]) -> str:
    """The innermost frame in our package, else the innermost frame (``file:line function``)."""
    for frame in frames:
        name = str(frame.get("filename", ""))
        if "lightning_viper" in name:
            short = name[name.rindex("lightning_viper") :]
            return f"{short}:{frame.get('line')} {frame.get('name')}"
    if frames:
        return f"{frames[0].get('filename')}:{frames[0].get('line')} {frames[0].get('name')}"
    return "<no stack>"


def peak_of(trace: list[dict[str, Any]], before: int) -> PeakReport:
    """Replay one device's allocator ``trace`` (alloc / free_requested events) -> its :class:`PeakReport`."""
    current, peak, peak_at = 0, 0, -1
    for i, event in enumerate(trace):
        action = event.get("action")
        if action == "alloc":
            current += int(event["size"])
            if current > peak:
                peak, peak_at = current, i
        elif action == "free_requested":
            current -= int(event["size"])
    live: dict[int, dict[str, Any]] = {}
    for event in trace[: peak_at + 1]:
        action = event.get("action")
        if action == "alloc":
            live[int(event["addr"])] = event
        elif action == "free_requested":
            live.pop(int(event["addr"]), None)
    report = PeakReport(before=before, peak=before + peak, events=len(trace))
    for event in live.values():
        site = _site(list(event.get("frames") or []))
        report.by_site[site] = report.by_site.get(site, 0) + int(event["size"])
    return report


def peak_summary(report: PeakReport, rows: int = 10) -> dict[str, Any]:
    """The report as JSON: GiB before / at the peak and the ``rows`` largest sites."""
    top = sorted(report.by_site.items(), key=lambda kv: -kv[1])[:rows]
    return {
        "before_gib": report.before / GIB,
        "peak_gib": report.peak / GIB,
        "sites_gib": {site: size / GIB for site, size in top},
    }


@contextmanager
def trace_peak(device: torch.device, max_entries: int = 2_000_000) -> Iterator[PeakReport]:
    """Trace the CUDA allocator inside the block; the yielded :class:`PeakReport` is filled on exit.

    CUDA only (raises elsewhere). Blocks freed before the trace started but allocated earlier
    count in ``before``; history beyond ``max_entries`` events is dropped (the oldest first)."""
    if device.type != "cuda":
        raise RuntimeError("trace_peak needs a CUDA device (it reads the CUDA caching allocator's history)")
    report = PeakReport()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python", max_entries=max_entries)
    try:
        yield report
    finally:
        torch.cuda.synchronize(device)
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        index = device.index if device.index is not None else torch.cuda.current_device()
        traces = snapshot.get("device_traces") or []
        result = peak_of(list(traces[index]) if index < len(traces) else [], before)
        report.before, report.peak, report.by_site, report.events = (
            result.before,
            result.peak,
            result.by_site,
            result.events,
        )
        log.info("memory peak:\n%s", report.table())
