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
from lightning_viper.bench.peer import hf_peer, hf_prefill
from lightning_viper.bench.pipeline import FrameSource, embed_prompt, prefill, prompt_ids, training_batch
from lightning_viper.bench.prefill import _device
from lightning_viper.bench.timing import device_info, peak_gib, reset_peak, write_json
from lightning_viper.generation import greedy_generate
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.ops.profiling import PREFIX, region_totals

log = logging.getLogger(__name__)


def profile_run(
    run: Callable[[], None], device: torch.device, row_limit: int
) -> tuple[dict[str, Any], str, dict[str, float]]:
    """Run ``run`` once under ``torch.profiler``: (per-range totals, table of the top ops, counts:
    ``aten_ops`` dispatched, ``kernels`` launched on the device and their summed ``kernel_ms``)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table: str = prof.key_averages().table(sort_by=key, row_limit=row_limit, max_name_column_width=60)
    events = prof.events()
    # the device timeline also holds the profiler's copies of our ``viper/`` ranges: not kernels
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.name.startswith(PREFIX)]
    counts = {
        "aten_ops": float(sum(1 for e in events if e.name.startswith("aten::"))),
        "kernels": float(len(kernels)),
        "kernel_ms": sum(e.device_time for e in kernels) / 1000.0,  # profiler times are in us
    }
    return region_totals(events), table, counts


def one_figure(regions: dict[str, dict[str, float]], device: torch.device) -> dict[str, float]:
    """One millisecond figure per range (see the module doc)."""
    if device.type != "cuda":
        return {name: r["cpu_ms"] for name, r in regions.items()}
    return {name: r["device_span_ms"] or r["device_ms"] for name, r in regions.items()}


def bench_breakdown(
    model: ModelName = "paper",
    strategy: Strategy = "transv",
    frames: int = 1024,
    mode: Literal["prefill", "train", "peer"] = "prefill",
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
    after a warm-up step; writes ``{tag}.json`` (``regions``, ``regions_ms``, ``counts``, peak
    memory) and ``{tag}_profile.txt`` (the profiler's top ops) under ``out_dir``. ``mode='peer'``
    profiles the backbone's prefill alone (no stages) and transformers' ``NemotronHForCausalLM``
    on the same weights and embeddings (a hybrid model): ``peer_counts`` and
    ``{tag}_peer_profile.txt`` beside ours, so the two can be compared kernel by kernel."""
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
    run_peer: Callable[[], None] | None = None
    if mode == "prefill":
        lm.eval()

        def run() -> None:
            prefill(lm, source, frames, ids)
    elif mode == "peer":
        lm.eval()
        tok = lm.tokenizer
        assert tok is not None and tok.eos_token_id is not None
        with torch.no_grad():
            hidden, state = embed_prompt(lm, lm.encode_video(source.video(frames)), ids)  # (1, T, D)
        peer = hf_peer(lm.backbone)  # type: ignore[arg-type]
        eos = tok.eos_token_id

        def run() -> None:
            greedy_generate(lm.backbone, hidden, state, (), 1, eos, eos)

        def run_peer() -> None:
            hf_prefill(peer, hidden)
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
    regions, table, counts = profile_run(run, dev, row_limit)
    results["regions"] = regions
    results["regions_ms"] = one_figure(regions, dev)
    results["counts"] = counts
    results["peak"] = peak_gib(dev)
    log.info("regions ms: %s", {k: round(v, 1) for k, v in results["regions_ms"].items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}_profile.txt").write_text(table)
    results["profile"] = str(out / f"{tag}_profile.txt")
    if run_peer is not None:
        run_peer()  # warm-up
        _, peer_table, results["peer_counts"] = profile_run(run_peer, dev, row_limit)
        (out / f"{tag}_peer_profile.txt").write_text(peer_table)
        results["peer_profile"] = str(out / f"{tag}_peer_profile.txt")
        log.info("counts ours %s, transformers' %s", counts, results["peer_counts"])
    write_json(out / f"{tag}.json", results)
    return results
