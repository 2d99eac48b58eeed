"""Profiler ranges: the model's parts appear, with counts, in a profile of one forward."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from lightning_viper.backbones import tiny_hybrid, tiny_qwen2
from lightning_viper.bench.decode import text_state
from lightning_viper.generation import greedy_generate
from lightning_viper.ops.profiling import Marks, region, region_totals


def test_nested_ranges_are_summed_by_name() -> None:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            with region("outer"), region("inner"):
                torch.randn(64, 64) @ torch.randn(64, 64)
    totals = region_totals(prof.events())
    assert set(totals) == {"outer", "inner"}
    assert totals["outer"]["count"] == 3 == totals["inner"]["count"]
    assert 0 < totals["inner"]["cpu_ms"] <= totals["outer"]["cpu_ms"]
    assert totals["inner"]["device_ms"] == 0  # a CPU run launches no kernels


def test_generation_marks_prefill_layers_and_decode() -> None:
    torch.manual_seed(0)
    for backbone, kinds in ((tiny_hybrid(), {"mamba": 2, "attention": 2, "mlp": 2}), (tiny_qwen2(), {"decoder": 4})):
        backbone.eval()
        state = text_state(12, torch.device("cpu"))
        hidden = backbone.embed(torch.randint(0, backbone.vocab_size, (1, 12)))
        marks = Marks(torch.device("cpu"))
        marks.mark("start")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            greedy_generate(backbone, hidden, state, [], 4, -1, 0, marks)
        totals = region_totals(prof.events())
        assert totals["prefill"]["count"] == 1 and totals["decode"]["count"] == 3  # tokens 2..4
        assert {k: int(totals[f"layer/{k}"]["count"]) for k in kinds} == kinds  # one per layer of the prefill
        elapsed = marks.elapsed_ms()
        assert 0 < elapsed["first_token"] <= elapsed["decoded"]
