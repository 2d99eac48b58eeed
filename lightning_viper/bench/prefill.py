"""``bench_prefill``: frames -> first token latency, peak memory, tokens/s and MFU per strategy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import torch

from lightning_viper.bench.flops import peak_bf16_flops
from lightning_viper.bench.memory import peak_summary, trace_peak
from lightning_viper.bench.models import DType, ModelName, Strategy, build_model
from lightning_viper.bench.peer import hf_peer, hf_prefill
from lightning_viper.bench.pipeline import FrameSource, embed_prompt, prefill, prompt_ids
from lightning_viper.bench.progress import LayerProgress
from lightning_viper.bench.shapes import model_shape, stage_specs
from lightning_viper.bench.timing import Marks, device_info, free_memory, median, peak_gib, reset_peak, write_json
from lightning_viper.module import VideoLM
from lightning_viper.ops.kernels import KernelChoice, resolve_kernels

log = logging.getLogger(__name__)

PAPER_FRAMES = (64, 256, 1024, 4096, 8192, 16384, 32768)


def _device(device: str | None) -> torch.device:
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


class Budget:
    """Wall-clock budget of the whole benchmark; predicts whether the next size still fits."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def fits(self, predicted_s: float) -> bool:
        return predicted_s < self.left()


def _progress(model: VideoLM, every_s: float | None, frames: int) -> AbstractContextManager[object]:
    """A :class:`LayerProgress` over the model's backbone, or nothing when ``every_s`` is None."""
    return nullcontext() if every_s is None else LayerProgress(model.backbone, every_s, f"{frames} frames")


def _measure(
    model: VideoLM,
    source: FrameSource,
    frames: int,
    ids: torch.Tensor,
    device: torch.device,
    warmup: int,
    repeats: int,
    long_run_s: float,
    encode: bool = True,
    progress_s: float | None = None,
) -> dict[str, Any]:
    """Warm-up + timed runs at one size; a single timed run once one run exceeds ``long_run_s``.
    ``progress_s``: log the layer each run has reached at most this often (:class:`LayerProgress`)."""
    for _ in range(warmup):
        with _progress(model, progress_s, frames):
            prefill(model, source, frames, ids, encode=encode)
    totals, embeds, result = [], [], None
    reset_peak(device)
    resident = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None  # weights etc.
    for _ in range(max(1, repeats)):
        marks = Marks(device)
        marks.mark("start")
        with _progress(model, progress_s, frames):
            result = prefill(model, source, frames, ids, marks, encode)
        ms = marks.elapsed_ms()
        totals.append(ms["first_token"])
        embeds.append(ms["embedded"])
        if ms["first_token"] > long_run_s * 1000:
            break
    assert result is not None
    return {
        "latency_ms": median(totals),
        "latency_runs_ms": totals,
        "embed_ms": median(embeds),
        "backbone_ms": median(totals) - median(embeds),
        "seq_len": result.seq_len,
        "seq_len_final": result.seq_len_final,
        "resident_gib": resident,
        **peak_gib(device),
    }


def _row(
    frames: int, strategy: str, timing: dict[str, Any], flops: dict[str, float], peak: float | None
) -> dict[str, Any]:
    seconds = timing["latency_ms"] / 1000.0
    achieved = flops["total"] / seconds
    return {
        "frames": frames,
        "strategy": strategy,
        "status": "ok",
        **timing,
        "tokens_per_s": timing["seq_len"] / seconds,
        "frames_per_s": frames / seconds,
        "flops": flops,
        "tflops_per_s": achieved / 1e12,
        "mfu": None if peak is None else achieved / peak,
    }


T = TypeVar("T")


def _guarded(run: Callable[..., T], *args: Any) -> tuple[T | None, str | None]:
    """``run(*args)``, or (None, message) on CUDA out-of-memory; memory is freed once the error is gone."""
    message = None
    try:
        return run(*args), None
    except torch.cuda.OutOfMemoryError as err:
        message = str(err).splitlines()[0]
    free_memory()  # outside the except block: the traceback no longer pins the failed run's tensors
    return None, message


def _time_peer(
    model: VideoLM,
    peer: torch.nn.Module,
    source: FrameSource,
    frames: int,
    ids: torch.Tensor,
    device: torch.device,
    repeats: int,
) -> list[float]:
    hidden, _ = embed_prompt(model, model.encode_video(source.video(frames)), ids)
    hf_prefill(peer, hidden)  # warm-up
    times = []
    reset_peak(device)
    for _ in range(max(1, repeats)):
        marks = Marks(device)
        marks.mark("start")
        hf_prefill(peer, hidden)
        marks.mark("first_token")
        times.append(marks.elapsed_ms()["first_token"])
    return times


def _peer_rows(
    model: VideoLM,
    source: FrameSource,
    sizes: Sequence[int],
    ids: torch.Tensor,
    device: torch.device,
    repeats: int,
    ours: dict[int, dict[str, Any]],
    budget: Budget,
) -> list[dict[str, Any]]:
    """transformers' NemotronHForCausalLM on the same input embeddings, same weights."""
    peer = hf_peer(model.backbone)  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    for frames in sizes:
        mine = ours.get(frames)
        if mine is None or mine["status"] != "ok":
            continue
        if not budget.fits(2.5 * mine["backbone_ms"] / 1000 * (repeats + 1)):
            rows.append({"frames": frames, "status": "skipped (time budget)"})
            continue
        times, oom = _guarded(_time_peer, model, peer, source, frames, ids, device, repeats)
        if times is None:
            rows.append({"frames": frames, "status": "oom", "error": oom, **peak_gib(device)})
            break
        hf_ms = median(times)
        rows.append(
            {
                "frames": frames,
                "status": "ok",
                "hf_backbone_ms": hf_ms,
                "hf_runs_ms": times,
                "ours_backbone_ms": mine["backbone_ms"],
                "speedup_backbone": hf_ms / mine["backbone_ms"],
                "hf_end_to_end_ms": mine["embed_ms"] + hf_ms,
                "speedup_end_to_end": (mine["embed_ms"] + hf_ms) / mine["latency_ms"],
                **peak_gib(device),
            }
        )
        log.info("peer %s", rows[-1])
    del peer
    return rows


def bench_prefill(
    frames: list[int] | None = None,
    strategies: list[Strategy] | None = None,
    model: ModelName = "paper",
    prefill_chunk: int | None = None,
    micro_batch: int = 128,
    instruction_tokens: int = 32,
    warmup: int = 1,
    repeats: int = 3,
    long_run_s: float = 8.0,
    warmup_every_size: bool = False,
    progress_s: float | None = None,
    time_budget_s: float | None = None,
    peer: bool = True,
    peer_max_frames: int = 4096,
    kernels: KernelChoice = "auto",
    dtype: DType = "bfloat16",
    device: str | None = None,
    peak_tflops: float | None = None,
    out_dir: str = "runs/bench",
    tag: str = "prefill",
    plot: bool = True,
    seed: int = 0,
    encode: bool = True,
    encoder_options: dict[str, Any] | None = None,
    memory_trace: bool = False,
) -> dict[str, Any]:
    """Prefill from frames to the first token at growing frame counts, per compression strategy.

    Args:
        frames: frame counts to try, ascending (default 64 .. 32k); a strategy stops at its first OOM.
        strategies: 'none', 'transv' (paper: TransV uniform 0.5 @ 7 + TransV attention 0.1 @ 39),
            'uniform_drop' (TokenDrop uniform at the same layers/ratios).
        model: 'paper' (SigLIP so400m + ToMe 16 + Nemotron-Nano-9B-v2), '2b' or 'tiny' (CPU tests).
        prefill_chunk: the backbone's chunked prefill (tokens per chunk), None = whole sequence.
        micro_batch: frames per encoder + projector call.
        instruction_tokens: prompt words after the video (the TransV queries).
        warmup, repeats: untimed runs before the first size and timed runs per size (median
            reported); once a run takes more than ``long_run_s`` seconds the size gets that single
            timed run.
        warmup_every_size: ``warmup`` untimed runs before every size, not only the first: a
            size's first run pays allocator growth, cuBLAS heuristics and Triton autotuning for its
            new shapes, which a single timed run at a large size would otherwise include.
        progress_s: log the backbone layer each run has reached at most this often (seconds), so
            a run cut off by a time limit still says how far it got; None: no hooks.
        time_budget_s: stop (recording 'skipped') when the predicted next run would not fit.
        peer: also time transformers' NemotronHForCausalLM (same weights, same embeddings) with
            strategy 'none' at sizes up to ``peer_max_frames``.
        kernels: 'auto' | 'torch' | 'cuda' for our Mamba-2 path.
        peak_tflops: dense bf16 peak for MFU; default from the GPU name (H100/H200 SXM: 989.4).
        encode: False feeds random vision tokens instead of running encoder and projector (the
            backbone's time and peak memory alone, e.g. at 100k frames; the peer is skipped).
        encoder_options: vision-tower options, e.g. ``{"compile": true}`` or ``{"fused": false}``
            (:class:`~lightning_viper.encoders.hf_tower.HFVisionTower`); the warm-up at the first
            size pays any compilation.
        memory_trace: (CUDA) record the allocator around each size's runs and report what was
            alive at the peak by allocating line (:mod:`~lightning_viper.bench.memory`): the row's
            ``memory_peak`` and ``{tag}_memory_{strategy}_{frames}.txt``.
        out_dir, tag: results go to ``{out_dir}/{tag}.json`` (rewritten after every size) and
            ``{tag}.png``.

    Returns:
        The results dict written to JSON: ``device``, ``config``, ``rows`` (one per strategy and
        size: latency_ms, embed_ms, backbone_ms, peak_alloc_gib, tokens_per_s, flops, mfu, status),
        ``peer`` rows and ``max_frames`` per strategy.
    """
    torch.manual_seed(seed)
    dev = _device(device)
    sizes = sorted(frames or PAPER_FRAMES)
    names: list[Strategy] = list(strategies or ["none", "transv", "uniform_drop"])
    info = device_info(dev)
    peak = (
        peak_tflops * 1e12
        if peak_tflops is not None
        else (peak_bf16_flops(info.get("gpu", "")) if dev.type == "cuda" else None)
    )
    out = Path(out_dir)
    results: dict[str, Any] = {
        "device": info,
        "config": {
            "frames": sizes,
            "strategies": names,
            "model": model,
            "prefill_chunk": prefill_chunk,
            "micro_batch": micro_batch,
            "instruction_tokens": instruction_tokens,
            "warmup": warmup,
            "repeats": repeats,
            "long_run_s": long_run_s,
            "warmup_every_size": warmup_every_size,
            "progress_s": progress_s,
            "time_budget_s": time_budget_s,
            "kernels": kernels,
            "kernels_resolved": resolve_kernels(kernels, dev),
            "dtype": dtype,
            "peak_flops": peak,
            "encode": encode,
            "encoder_options": encoder_options or {},
            "memory_trace": memory_trace,
        },
        "rows": [],
        "peer": [],
        "max_frames": {},
    }
    budget = Budget(time_budget_s)
    for strategy in names:
        lm = build_model(
            model, strategy, dev, dtype, micro_batch, prefill_chunk, kernels, encoder_options=encoder_options
        ).eval()
        shape, specs = (
            model_shape(lm.encoder, lm.projector, lm.backbone),
            stage_specs(lm.stages()),
        )
        source = FrameSource(lm.encoder.image_size, micro_batch, dev, seed)
        if encode:  # one full micro-batch untimed: a compiled encoder compiles its timed shape here
            with torch.no_grad():
                lm.encode_video(source.video(micro_batch))
        ids, n_instr = prompt_ids(lm, instruction_tokens, dev)
        ours: dict[int, dict[str, Any]] = {}
        last: tuple[int, float] | None = None
        for i, n in enumerate(sizes):
            warm = warmup if i == 0 or warmup_every_size else 0
            runs = warm + repeats
            guess = 0.0 if last is None else last[1] * (n / last[0]) ** 1.2 * min(runs, 2)
            if not budget.fits(guess):
                results["rows"].append(
                    {"frames": n, "strategy": strategy, "status": "skipped (time budget)", "predicted_s": guess}
                )
                continue
            with trace_peak(dev) if memory_trace else nullcontext() as peak_report:
                timing, oom = _guarded(_measure, lm, source, n, ids, dev, warm, repeats, long_run_s, encode, progress_s)
            if timing is None:
                results["rows"].append(
                    {"frames": n, "strategy": strategy, "status": "oom", "error": oom, **peak_gib(dev)}
                )
                log.warning("%s: out of memory at %d frames: %s", strategy, n, oom)
                write_json(out / f"{tag}.json", results)
                break
            flops = shape.prefill_flops(n, timing["seq_len"] - n * shape.projector.tokens_per_frame, n_instr, specs)
            if not encode:  # encoder and projector did not run: their work is not counted
                flops = {**flops, "encoder": 0.0, "projector": 0.0, "total": flops["backbone"] + flops["compression"]}
            row = _row(n, strategy, timing, flops, peak)
            if peak_report is not None:
                row["memory_peak"] = peak_summary(peak_report)
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{tag}_memory_{strategy}_{n}.txt").write_text(peak_report.table(40) + "\n")
            results["rows"].append(row)
            ours[n] = row
            results["max_frames"][strategy] = n
            last = (n, timing["latency_ms"] / 1000.0)
            log.info(
                "%s %d frames: %.1f ms, peak %s GiB, mfu %s",
                strategy,
                n,
                row["latency_ms"],
                row["peak_alloc_gib"],
                row["mfu"],
            )
            write_json(out / f"{tag}.json", results)
        if peer and encode and strategy == "none":
            results["peer"] = _peer_rows(
                lm, source, [n for n in sizes if n <= peer_max_frames], ids, dev, repeats, ours, budget
            )
        del lm, source
        free_memory()
        write_json(out / f"{tag}.json", results)
    if plot:
        from lightning_viper.bench.plot import plot_prefill

        results["plot"] = str(plot_prefill(results, out / f"{tag}.png"))
        write_json(out / f"{tag}.json", results)
    return results
