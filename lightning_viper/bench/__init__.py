"""Efficiency benchmarks: prefill from frames to the first token, decoding after a long prompt,
and a stage-2 training step.

``bench_prefill`` and ``bench_train`` take typed arguments (for ``viper bench prefill|train``),
write a JSON of results (and a PNG for prefill) and return the same dict. FLOP counts come from
:mod:`lightning_viper.bench.flops`.
"""

from lightning_viper.bench.breakdown import bench_breakdown
from lightning_viper.bench.decode import bench_decode
from lightning_viper.bench.encoder import bench_encoder
from lightning_viper.bench.prefill import bench_prefill
from lightning_viper.bench.train import bench_train

__all__ = ["bench_breakdown", "bench_decode", "bench_encoder", "bench_prefill", "bench_train"]
