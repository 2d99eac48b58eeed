"""``bench_breakdown``: where prefill time goes (encoder, ToMe, MLP, each layer kind, each stage), and a
``torch.profiler`` table of the top kernels of one prefill or one training step.

The region timings re-run the pieces of :func:`lightning_viper.bench.pipeline.prefill` one by one
with CUDA events between them (the backbone's layer loop is replayed here with a mark around every
layer and stage), so they add up to about one end-to-end prefill.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_viper.bench.models import DType, ModelName, Strategy, build_model, stages_of
from lightning_viper.bench.pipeline import FrameSource, embed_prompt, prefill, prompt_ids, training_batch
from lightning_viper.bench.prefill import _device
from lightning_viper.bench.timing import Marks, device_info, peak_gib, reset_peak, write_json
from lightning_viper.module import VideoLM
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.projectors.tome import ToMeProjector, tome_merge

log = logging.getLogger(__name__)


@torch.no_grad()
def _regions(
    lm: VideoLM, source: FrameSource, frames: int, micro_batch: int, ids: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """Milliseconds per region of one prefill (summed over micro-batches / layers of a kind)."""
    times: dict[str, float] = defaultdict(float)
    proj = lm.projector
    vision = []
    for start in range(0, frames, micro_batch):
        marks = Marks(device)
        marks.mark("start")
        chunk = source.batch(min(micro_batch, frames - start))
        marks.mark("copy")
        feats = lm.encoder(chunk)  # (f, P, Dv)
        marks.mark("encoder")
        if isinstance(proj, ToMeProjector) and proj.mlp is not None:
            merged, _ = tome_merge(feats, None, proj.num_tokens, proj.num_heads)
            marks.mark("tome")
            vision.append(proj.mlp(merged))
            marks.mark("mlp")
        else:
            vision.append(proj(feats))
            marks.mark("projector")
        for name, ms in marks.intervals():
            times[f"embed/{name}"] += ms
    marks = Marks(device)
    marks.mark("start")
    hidden, state = embed_prompt(lm, torch.cat(vision), ids)
    del vision
    marks.mark("embed/splice")
    backbone, cache = lm.backbone, lm.backbone.new_cache(1)
    by_layer: dict[int, list[Any]] = defaultdict(list)
    for stage in stages_of(lm):
        by_layer[stage.layer].append(stage)
    for index in range(backbone.num_layers):
        for stage in by_layer[index]:
            hidden, state = stage(hidden, state, backbone)
            marks.mark(f"stage/L{index}_{type(stage).__name__}_{getattr(stage, 'selector', '')}")
        hidden = backbone.run_layer(index, hidden, state, cache)
        marks.mark(f"layer/{backbone.layer_kinds[index]}")
    backbone.logits(backbone.final_norm(hidden[:, -1:])).argmax(-1)
    marks.mark("head")
    for name, ms in marks.intervals():
        times[name] += ms
    return dict(times)


def _profile_table(run: Any, device: torch.device, row_limit: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table: str = prof.key_averages().table(sort_by=key, row_limit=row_limit, max_name_column_width=60)
    return table


def bench_breakdown(
    model: ModelName = "paper",
    strategy: Strategy = "transv",
    frames: int = 1024,
    mode: Literal["prefill", "train"] = "prefill",
    micro_batch: int = 128,
    prefill_chunk: int | None = None,
    batch_size: int = 1,
    profile: bool = True,
    row_limit: int = 30,
    kernels: KernelChoice = "auto",
    dtype: DType = "bfloat16",
    device: str | None = None,
    out_dir: str = "runs/bench",
    tag: str = "breakdown",
) -> dict[str, Any]:
    """Region timings of one prefill (``mode='prefill'``) and/or a profiler table of one prefill or
    training step; writes ``{tag}.json`` and ``{tag}_profile.txt`` under ``out_dir``."""
    dev = _device(device)
    trainable: list[Any] = ["projector", "backbone", "compression"]
    lm = build_model(model, strategy, dev, dtype, micro_batch, prefill_chunk, kernels, trainable=trainable)
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
        },
    }
    out = Path(out_dir)
    if mode == "prefill":
        lm.eval()
        prefill(lm, source, frames, micro_batch, ids)  # warm-up
        reset_peak(dev)
        results["regions_ms"] = _regions(lm, source, frames, micro_batch, ids, dev)
        results["regions_peak"] = peak_gib(dev)
        kinds: dict[str, float] = defaultdict(float)
        for name, ms in results["regions_ms"].items():
            kinds[name.split("/")[0]] += ms
        results["totals_ms"] = dict(kinds)
        log.info("regions: %s", {k: round(v, 1) for k, v in results["regions_ms"].items()})

        def run() -> None:
            prefill(lm, source, frames, micro_batch, ids)
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
    write_json(out / f"{tag}.json", results)
    if profile:
        table = _profile_table(run, dev, row_limit)
        (out / f"{tag}_profile.txt").write_text(table)
        results["profile"] = str(out / f"{tag}_profile.txt")
        write_json(out / f"{tag}.json", results)
    return results
