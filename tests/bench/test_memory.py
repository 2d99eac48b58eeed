"""The allocator-trace replay behind ``bench prefill``'s ``memory_trace``."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.bench.memory import GIB, peak_of, peak_summary, trace_peak


def alloc(addr: int, gib: float, where: str) -> dict[str, object]:
    frames = [{"filename": "/x/torch/nn/functional.py", "line": 1, "name": "linear"},
              {"filename": f"/src/lightning_viper/{where}.py", "line": 7, "name": where}]  # fmt: skip
    return {"action": "alloc", "addr": addr, "size": int(gib * GIB), "frames": frames}


def free(addr: int, gib: float) -> dict[str, object]:
    return {"action": "free_requested", "addr": addr, "size": int(gib * GIB)}


def test_peak_lists_what_was_alive_at_the_highest_point() -> None:
    trace = [
        alloc(1, 4, "a"),
        alloc(2, 2, "b"),
        free(1, 4),  # 2 GiB alive
        alloc(3, 3, "c"),
        alloc(4, 1.5, "c"),  # peak: b 2 + c 4.5 = 6.5 GiB (a + b was 6)
        free(3, 3),
        alloc(5, 0.5, "d"),  # after the peak: not listed
    ]
    report = peak_of(trace, before=int(10 * GIB))
    assert report.peak == int(10 * GIB) + int(2 * GIB) + int(3 * GIB) + int(1.5 * GIB)
    assert report.by_site == {"lightning_viper/b.py:7 b": int(2 * GIB), "lightning_viper/c.py:7 c": int(4.5 * GIB)}
    summary = peak_summary(report)
    assert summary["peak_gib"] == pytest.approx(16.5) and summary["before_gib"] == pytest.approx(10)
    assert list(summary["sites_gib"]) == ["lightning_viper/c.py:7 c", "lightning_viper/b.py:7 b"]
    assert "16.50 GiB" in report.table()


def test_trace_peak_needs_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(RuntimeError, match="CUDA device"), trace_peak(torch.device("cpu")):
        pass
