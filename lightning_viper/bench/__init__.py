"""Efficiency benchmarks: prefill from frames to the first token, and a stage-2 training step.

``bench_prefill`` and ``bench_train`` take typed arguments (for ``viper bench prefill|train``),
write a JSON of results (and a PNG for prefill) and return the same dict. FLOP counts come from
:mod:`lightning_viper.bench.flops`.
"""

from lightning_viper.bench.breakdown import bench_breakdown
from lightning_viper.bench.prefill import bench_prefill
from lightning_viper.bench.train import bench_train

__all__ = ["bench_breakdown", "bench_prefill", "bench_train"]
