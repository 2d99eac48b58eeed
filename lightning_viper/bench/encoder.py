"""``bench_encoder``: the vision encoder alone (uint8 frames -> patch features), per micro-batch
size and with or without ``torch.compile`` of its layers, in ms per frame and MFU.

The encoder is about three quarters of the paper model's prefill, so this is where prefill MFU
is won or lost; the table says which settings to run the end-to-end prefill with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lightning_viper.bench.flops import peak_bf16_flops
from lightning_viper.bench.models import DType, building_on
from lightning_viper.bench.pipeline import FrameSource
from lightning_viper.bench.prefill import _device, _guarded
from lightning_viper.bench.shapes import encoder_shape
from lightning_viper.bench.timing import Marks, device_info, free_memory, median, peak_gib, reset_peak, write_json
from lightning_viper.encoders.siglip import SiglipEncoder, siglip_so400m

log = logging.getLogger(__name__)


def _encoder(size: str, micro_batch: int, dtype: DType, compile: bool) -> SiglipEncoder:
    if size == "paper":
        return siglip_so400m(micro_batch=micro_batch, dtype=dtype, compile=compile)
    if size == "tiny":
        return SiglipEncoder(micro_batch=micro_batch, dtype=dtype, compile=compile)
    raise ValueError(f"unknown encoder size {size!r}: use 'paper' (SigLIP so400m/14 at 384 px) or 'tiny'")


@torch.no_grad()
def _time(
    encoder: SiglipEncoder, source: FrameSource, frames: int, device: torch.device, repeats: int
) -> dict[str, Any]:
    video = source.video(frames)
    encoder(source.batch(frames))  # warm-up (and compilation)
    reset_peak(device)
    runs = []
    for _ in range(max(1, repeats)):
        marks = Marks(device)
        marks.mark("start")
        for start in range(0, frames, encoder.micro_batch):  # what VideoLM.encode_video feeds it
            encoder(video[start : start + encoder.micro_batch].to(device, non_blocking=True))
        marks.mark("done")
        runs.append(marks.elapsed_ms()["done"])
    return {"ms": median(runs), "runs_ms": runs, **peak_gib(device)}


def bench_encoder(
    frames: int = 512,
    micro_batches: list[int] | None = None,
    compile: list[bool] | None = None,
    size: str = "paper",
    repeats: int = 3,
    dtype: DType = "bfloat16",
    device: str | None = None,
    peak_tflops: float | None = None,
    out_dir: str = "runs/bench",
    tag: str = "encoder",
) -> dict[str, Any]:
    """Vision-encoder speed per micro-batch size, eager and compiled.

    Encodes ``frames`` frames (random uint8, host memory) at each micro-batch size, eager and/or
    compiled; one row per setting with ms, ms per frame, frames/s and MFU (encoder FLOPs up to the
    feature layer, :class:`~lightning_viper.bench.flops.EncoderShape`). Writes ``{tag}.json``."""
    dev = _device(device)
    info = device_info(dev)
    peak = (
        peak_tflops * 1e12
        if peak_tflops is not None
        else (peak_bf16_flops(info.get("gpu", "")) if dev.type == "cuda" else None)
    )
    sizes = list(micro_batches or [128, 256])
    modes = list(compile if compile is not None else [False, True])
    results: dict[str, Any] = {
        "device": info,
        "config": {"frames": frames, "micro_batches": sizes, "compile": modes, "size": size, "repeats": repeats,
                   "dtype": dtype, "peak_flops": peak},
        "rows": [],
    }  # fmt: skip
    out = Path(out_dir) / f"{tag}.json"
    for compiled in modes:
        for mb in sizes:
            with building_on(dev, getattr(torch, dtype)):
                encoder = _encoder(size, mb, dtype, compiled).to(dev)
            results["config"]["attn_implementation"] = getattr(encoder.model.config, "_attn_implementation", None)
            source = FrameSource(encoder.image_size, mb, dev)
            timing, oom = _guarded(_time, encoder, source, frames, dev, repeats)
            row: dict[str, Any] = {"micro_batch": mb, "compile": compiled}
            if timing is None:
                row.update(status="oom", error=oom)
            else:
                flops = encoder_shape(encoder).flops_per_frame() * frames
                seconds = timing["ms"] / 1000
                row.update(
                    status="ok",
                    **timing,
                    ms_per_frame=timing["ms"] / frames,
                    frames_per_s=frames / seconds,
                    tflops_per_s=flops / seconds / 1e12,
                    mfu=None if peak is None else flops / seconds / peak,
                )
            results["rows"].append(row)
            log.info("encoder %s", {k: v for k, v in row.items() if k != "runs_ms"})
            del encoder, source
            free_memory()
            write_json(out, results)
    return results
