"""``bench_breakdown``: where the time of one prefill or one training step goes, read from a
``torch.profiler`` trace of the real model.

The model marks its parts with profiler ranges (:func:`lightning_viper.ops.profiling.region`):
``encode`` (all micro-batches) holding ``encoder`` and ``projector``, ``splice``, ``prefill``
(backbone + LM head) holding ``layer/<kind>`` for every layer and ``stage/L<i>_<Stage>`` for
every compression stage, and ``decode``. The benchmark runs :func:`~lightning_viper.bench.pipeline.prefill`
(or a training step) once under the profiler and sums each range; it also writes the profiler's
table of the top kernels.

Figures per range (``regions``): ``device_ms`` (kernel time launched inside the range, GPU),
``device_span_ms`` (its span on the device timeline, idle gaps included), ``cpu_ms`` (host time;
the real time on a CPU run) and ``count``. ``regions_ms`` takes one number per range: the
device span on a GPU (the device's own kernel sum where the profiler records no span), host time
on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_viper.bench.models import STAGE2_TRAINABLE, DType, ModelName, Strategy, build_model
from lightning_viper.bench.pipeline import FrameSource, prefill, prompt_ids, training_batch
from lightning_viper.bench.prefill import _device
from lightning_viper.bench.timing import device_info, peak_gib, reset_peak, write_json
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.ops.profiling import region_totals

log = logging.getLogger(__name__)


def profile_run(run: Callable[[], None], device: torch.device, row_limit: int) -> tuple[dict[str, Any], str]:
    """Run ``run`` once under ``torch.profiler``: (per-range totals, table of the top ops)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table: str = prof.key_averages().table(sort_by=key, row_limit=row_limit, max_name_column_width=60)
    return region_totals(prof.events()), table


def one_figure(regions: dict[str, dict[str, float]], device: torch.device) -> dict[str, float]:
    """One millisecond figure per range (see the module doc)."""
    if device.type != "cuda":
        return {name: r["cpu_ms"] for name, r in regions.items()}
    return {name: r["device_span_ms"] or r["device_ms"] for name, r in regions.items()}


def bench_breakdown(
    model: ModelName = "paper",
    strategy: Strategy = "transv",
    frames: int = 1024,
    mode: Literal["prefill", "train"] = "prefill",
    micro_batch: int = 128,
    prefill_chunk: int | None = None,
    batch_size: int = 1,
    row_limit: int = 30,
    kernels: KernelChoice = "auto",
    dtype: DType = "bfloat16",
    device: str | None = None,
    out_dir: str = "runs/bench",
    tag: str = "breakdown",
    encoder_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Profile one prefill or one training step and split its time by model region.

    ``mode='prefill'`` times one prefill after an untimed warm-up, ``mode='train'`` one training step
    after a warm-up step; writes ``{tag}.json`` (``regions``, ``regions_ms``, peak memory) and
    ``{tag}_profile.txt`` (the profiler's top ops) under ``out_dir``."""
    dev = _device(device)
    lm = build_model(
        model, strategy, dev, dtype, micro_batch, prefill_chunk, kernels, False, STAGE2_TRAINABLE, encoder_options
    )
    source = FrameSource(lm.encoder.image_size, min(micro_batch, frames * batch_size), dev)
    ids, _ = prompt_ids(lm, 32, dev)
    results: dict[str, Any] = {
        "device": device_info(dev),
        "config": {
            "model": model,
            "strategy": strategy,
            "frames": frames,
            "mode": mode,
            "micro_batch": micro_batch,
            "prefill_chunk": prefill_chunk,
            "batch_size": batch_size,
            "kernels": kernels,
            "dtype": dtype,
            "encoder_options": encoder_options or {},
        },
    }
    run: Callable[[], None]
    if mode == "prefill":
        lm.eval()

        def run() -> None:
            prefill(lm, source, frames, ids)
    else:
        lm.train()
        batch = training_batch(lm, source, frames, batch_size, 32, 32)
        opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5, fused=dev.type == "cuda")

        def run() -> None:
            loss, _ = lm(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    run()  # warm-up
    reset_peak(dev)
    regions, table = profile_run(run, dev, row_limit)
    results["regions"] = regions
    results["regions_ms"] = one_figure(regions, dev)
    results["peak"] = peak_gib(dev)
    log.info("regions ms: %s", {k: round(v, 1) for k, v in results["regions_ms"].items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}_profile.txt").write_text(table)
    results["profile"] = str(out / f"{tag}_profile.txt")
    write_json(out / f"{tag}.json", results)
    return results
