"""``bench_encoder``: the vision encoder alone (uint8 frames -> patch features), per implementation,
micro-batch size and ``torch.compile``, in ms per frame and MFU.

The encoder is most of the paper model's prefill, so this is where prefill MFU is won or lost.
Variants (``{"fused": ..., "compile": ...}``, the
:class:`~lightning_viper.encoders.hf_tower.HFVisionTower` arguments) run on the same random
weights; each row also reports how far its features are from a float32 run of transformers' own
forward on the same weights and frames (``rel_err``: ||f - ref|| / ||ref|| over the first
micro-batch; ``cos_min``: the lowest per-token cosine similarity), so a faster variant that
changes the features says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_viper.bench.flops import peak_bf16_flops
from lightning_viper.bench.models import DType, building_on
from lightning_viper.bench.pipeline import FrameSource
from lightning_viper.bench.prefill import _device, _guarded
from lightning_viper.bench.shapes import encoder_shape
from lightning_viper.bench.timing import Marks, device_info, free_memory, median, peak_gib, reset_peak, write_json
from lightning_viper.encoders.siglip import SiglipEncoder, siglip_so400m

log = logging.getLogger(__name__)

DEFAULT_VARIANTS: list[dict[str, Any]] = [
    {"fused": False},
    {"fused": False, "compile": True},
    {"fused": True},
    {"fused": True, "compile": True},
]


_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def _encoder(size: str, micro_batch: int, dtype: DType, options: dict[str, Any]) -> SiglipEncoder:
    if size == "paper":
        return siglip_so400m(micro_batch=micro_batch, dtype=dtype, **options)
    if size == "tiny":
        return SiglipEncoder(micro_batch=micro_batch, dtype=dtype, **options)
    raise ValueError(f"unknown encoder size {size!r}: use 'paper' (SigLIP so400m/14 at 384 px) or 'tiny'")


def natural_frames(count: int, size: int, seed: int = 0) -> Tensor:
    """(count, 3, size, size) uint8 frames that look more like photographs than uniform noise:
    smooth colour fields (an 8 x 8 random grid upsampled bicubically), a few sharp-edged
    rectangles and mild pixel noise. Used for the features' error, not for timing."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 8, 8, generator=gen)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    for i in range(count):
        for _ in range(3):
            y0, x0 = (torch.randint(0, size * 3 // 4, (2,), generator=gen)).tolist()
            h, w = (torch.randint(size // 16, size // 4, (2,), generator=gen)).tolist()
            x[i, :, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=gen)
    x = x + 0.02 * torch.randn(x.shape, generator=gen)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def feature_error(features: Tensor, reference: Tensor) -> dict[str, float]:
    """rel_err = ||f - ref|| / ||ref|| and the lowest per-token cosine similarity, in float32."""
    f, ref = features.float().flatten(0, -2), reference.float().flatten(0, -2)  # (tokens, Dv)
    return {
        "rel_err": float((f - ref).norm() / ref.norm()),
        "cos_min": float(F.cosine_similarity(f, ref, dim=-1).min()),
    }


@torch.no_grad()
def _reference(encoder: SiglipEncoder, frames: Tensor) -> Tensor:
    """transformers' own forward in float32 on ``encoder``'s weights: the features' reference."""
    dtype = next(encoder.parameters()).dtype
    encoder.float()
    try:
        with encoder.transformers_forward():
            return encoder(frames).float()
    finally:
        encoder.to(dtype)


@torch.no_grad()
def attention_backends(
    encoder: SiglipEncoder, micro_batch: int, device: torch.device, backends: list[str], repeats: int = 5
) -> list[dict[str, Any]]:
    """One encoder layer's attention (``micro_batch`` frames, the tower's heads and tokens) per SDPA
    backend ('flash', 'cudnn', 'efficient', 'math'): ms per call and TFLOP/s, or the error."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    layer: Any = encoder.layers()[0]
    heads, dim = int(layer.self_attn.num_heads), encoder.embed_dim
    tokens = encoder.num_patches + encoder.num_prefix_tokens
    dtype = next(encoder.parameters()).dtype
    qkv = torch.randn(micro_batch, tokens, 3, heads, dim // heads, device=device, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # the fused layer's strided views
    flops = 4 * micro_batch * tokens * tokens * dim
    rows: list[dict[str, Any]] = []
    for name in backends:
        row: dict[str, Any] = {"backend": name, "micro_batch": micro_batch, "tokens": tokens, "head_dim": dim // heads}
        try:
            with sdpa_kernel(getattr(SDPBackend, _BACKENDS.get(name, name.upper()))):
                F.scaled_dot_product_attention(q, k, v)  # warm-up
                runs = []
                for _ in range(repeats):
                    marks = Marks(device)
                    marks.mark("start")
                    F.scaled_dot_product_attention(q, k, v)
                    marks.mark("done")
                    runs.append(marks.elapsed_ms()["done"])
            ms = median(runs)
            row.update(status="ok", ms=ms, tflops_per_s=flops / ms / 1e9)
        except (RuntimeError, AttributeError) as err:  # a backend that cannot take this shape says why
            row.update(status="unavailable", error=str(err).splitlines()[0][:200])
        rows.append(row)
        log.info("attention %s", row)
    return rows


@torch.no_grad()
def _time(
    encoder: SiglipEncoder, source: FrameSource, frames: int, device: torch.device, repeats: int
) -> dict[str, Any]:
    video = source.video(frames)
    encoder(source.batch(min(frames, encoder.micro_batch)))  # warm-up (and compilation)
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


@torch.no_grad()
def _profile(encoder: SiglipEncoder, source: FrameSource, frames: int, device: torch.device, path: Path) -> str:
    """One warm micro-batch under ``torch.profiler``; its kernel table goes to ``path``."""
    from lightning_viper.bench.breakdown import profile_run

    batch = source.batch(frames)
    _, table, _ = profile_run(lambda: encoder(batch), device, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    return str(path)


def bench_encoder(
    frames: int = 512,
    micro_batches: list[int] | None = None,
    variants: list[dict[str, Any]] | None = None,
    size: str = "paper",
    repeats: int = 3,
    error_frames: int = 16,
    dtype: DType = "bfloat16",
    device: str | None = None,
    peak_tflops: float | None = None,
    out_dir: str = "runs/bench",
    tag: str = "encoder",
    seed: int = 0,
    sdpa_backends: list[str] | None = None,
    profile: list[int] | None = None,
) -> dict[str, Any]:
    """Vision-encoder speed and feature error per variant and micro-batch size.

    Encodes ``frames`` frames (random uint8, pinned host memory) per setting; one row per
    (variant, micro-batch) with ms, ms per frame, frames/s, MFU (encoder FLOPs up to the feature
    layer, :class:`~lightning_viper.bench.flops.EncoderShape`) and the error of the features of
    ``error_frames`` :func:`natural_frames` against transformers' float32 forward on the same
    weights. Every variant is built with the same seed, so all share one set of weights.
    ``sdpa_backends`` (e.g. ["flash", "cudnn", "efficient"]) also times one layer's attention per
    SDPA backend (``attention`` rows). ``profile`` lists variant indexes whose one micro-batch is
    also run under ``torch.profiler`` (kernel table ``{tag}_profile_{index}.txt``). Writes ``{tag}.json``."""
    dev = _device(device)
    info = device_info(dev)
    peak = (
        peak_tflops * 1e12
        if peak_tflops is not None
        else (peak_bf16_flops(info.get("gpu", "")) if dev.type == "cuda" else None)
    )
    sizes = list(micro_batches or [128])
    settings = list(variants if variants is not None else DEFAULT_VARIANTS)
    results: dict[str, Any] = {
        "device": info,
        "config": {"frames": frames, "micro_batches": sizes, "variants": settings, "size": size, "repeats": repeats,
                   "error_frames": error_frames, "dtype": dtype, "peak_flops": peak, "seed": seed},
        "rows": [],
    }  # fmt: skip
    out = Path(out_dir) / f"{tag}.json"
    probe: Tensor | None = None
    reference: Tensor | None = None
    for index, options in enumerate(settings):
        for mb in sizes:
            torch.manual_seed(seed)
            with building_on(dev, getattr(torch, dtype)):
                encoder = _encoder(size, mb, dtype, options).to(dev)
            results["config"]["attn_implementation"] = getattr(encoder.model.config, "_attn_implementation", None)
            if sdpa_backends and "attention" not in results:
                results["attention"] = attention_backends(encoder, mb, dev, sdpa_backends)
            row: dict[str, Any] = {"micro_batch": mb, **options}
            if probe is None:
                probe = natural_frames(error_frames, encoder.image_size, seed).to(dev)
                reference = _reference(encoder, probe)
            assert reference is not None
            with torch.no_grad():
                row.update(feature_error(encoder(probe), reference))
            source = FrameSource(encoder.image_size, mb, dev)
            timing, oom = _guarded(_time, encoder, source, frames, dev, repeats)
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
            if timing is not None and index in (profile or []):
                row["profile"] = _profile(encoder, source, mb, dev, Path(out_dir) / f"{tag}_profile_{index}.txt")
            results["rows"].append(row)
            log.info("encoder %s", {k: v for k, v in row.items() if k != "runs_ms"})
            del encoder, source
            free_memory()
            write_json(out, results)
    return results
