"""``bench_train``: one stage-2 training step (frozen encoder; projector + backbone + TransV trained).

The step is ``VideoLM.forward`` (loss on the answer tokens) + backward + AdamW, as Lightning's
automatic optimisation runs it, timed with and without gradient checkpointing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lightning_viper.bench.flops import peak_bf16_flops
from lightning_viper.bench.models import STAGE2_TRAINABLE, DType, ModelName, Strategy, build_model
from lightning_viper.bench.pipeline import FrameSource, prompt_ids, training_batch
from lightning_viper.bench.prefill import _device, _guarded
from lightning_viper.bench.shapes import model_shape, stage_specs
from lightning_viper.bench.timing import Marks, device_info, free_memory, median, peak_gib, reset_peak, write_json
from lightning_viper.module import VideoLM
from lightning_viper.ops.kernels import KernelChoice, resolve_kernels

log = logging.getLogger(__name__)


def _optimizer(model: VideoLM, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=device.type == "cuda")


def _steps(
    model: VideoLM, batch: Any, opt: torch.optim.Optimizer, device: torch.device, warmup: int, repeats: int
) -> dict[str, Any]:
    """Untimed warm-up steps, then timed ones; returns the median step time and peak memory."""

    def step(marks: Marks | None) -> float:
        loss, _ = model(batch)
        if marks is not None:
            marks.mark("forward")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(warmup):
        step(None)
    reset_peak(device)
    times, forwards, losses = [], [], []
    for _ in range(max(1, repeats)):
        marks = Marks(device)
        marks.mark("start")
        losses.append(step(marks))
        marks.mark("step")
        ms = marks.elapsed_ms()
        times.append(ms["step"])
        forwards.append(ms["forward"])
    return {
        "step_ms": median(times),
        "step_runs_ms": times,
        "forward_ms": median(forwards),
        "loss": losses[-1],
        **peak_gib(device),
    }


def bench_train(
    frames: int = 256,
    batch_size: int = 1,
    checkpointing: list[bool] | None = None,
    model: ModelName = "2b",
    strategy: Strategy = "transv",
    micro_batch: int = 256,
    instruction_tokens: int = 32,
    answer_tokens: int = 32,
    warmup: int = 2,
    repeats: int = 5,
    kernels: KernelChoice = "auto",
    dtype: DType = "bfloat16",
    device: str | None = None,
    peak_tflops: float | None = None,
    out_dir: str = "runs/bench",
    tag: str = "train",
    seed: int = 0,
    encoder_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time a stage-2 training step with gradient checkpointing off and on.

    Args:
        frames: frames per sample (paper: 256, 16 tokens each). batch_size: samples per step.
        checkpointing: the settings to time (default [False, True]).
        model: '2b' (SigLIP so400m + ToMe 16 + the ~2.1B hybrid :func:`hybrid_2b`), 'paper' or 'tiny'.
        strategy: compression trained with the model (default the paper's TransV setting).
        warmup, repeats: untimed and timed steps (median reported).
        peak_tflops: dense bf16 peak for MFU (default from the GPU name).
        encoder_options: vision-tower options (e.g. ``{"compile": true}``), as in ``bench_prefill``.

    Returns (and writes to ``{out_dir}/{tag}.json``): ``device``, ``config`` and one row per
    checkpointing setting: step_ms, forward_ms, tokens_per_s (LLM input tokens, all samples),
    flops (model FLOPs: encoder forward + 3x forward of the trained parts, no recomputation),
    mfu, peak_alloc_gib, loss, status.
    """
    torch.manual_seed(seed)
    dev = _device(device)
    info = device_info(dev)
    peak = (
        peak_tflops * 1e12
        if peak_tflops is not None
        else (peak_bf16_flops(info.get("gpu", "")) if dev.type == "cuda" else None)
    )
    settings = checkpointing if checkpointing is not None else [False, True]
    results: dict[str, Any] = {
        "device": info,
        "config": {
            "frames": frames,
            "batch_size": batch_size,
            "model": model,
            "strategy": strategy,
            "micro_batch": micro_batch,
            "instruction_tokens": instruction_tokens,
            "answer_tokens": answer_tokens,
            "warmup": warmup,
            "repeats": repeats,
            "kernels": kernels,
            "kernels_resolved": resolve_kernels(kernels, dev),
            "dtype": dtype,
            "peak_flops": peak,
            "encoder_options": encoder_options or {},
        },
        "rows": [],
    }
    out = Path(out_dir) / f"{tag}.json"
    lm = build_model(model, strategy, dev, dtype, micro_batch, None, kernels, False, STAGE2_TRAINABLE, encoder_options)
    lm.train()
    shape, specs = (
        model_shape(lm.encoder, lm.projector, lm.backbone),
        stage_specs(lm.stages()),
    )
    source = FrameSource(lm.encoder.image_size, min(frames, micro_batch), dev, seed)
    batch = training_batch(lm, source, frames, batch_size, instruction_tokens, answer_tokens)
    n_instr = prompt_ids(lm, instruction_tokens, dev)[1]
    params = lm.parameter_counts()
    results["config"]["params"] = params
    for ckpt in settings:
        lm.backbone.gradient_checkpointing = ckpt
        opt = _optimizer(lm, dev)
        timing, oom = _guarded(_steps, lm, batch, opt, dev, warmup, repeats)
        del opt
        if timing is None:
            results["rows"].append({"gradient_checkpointing": ckpt, "status": "oom", "error": oom, **peak_gib(dev)})
            write_json(out, results)
            continue
        seq = int(batch.input_ids.shape[1]) - 1 + frames * shape.projector.tokens_per_frame  # per sample
        text = seq - frames * shape.projector.tokens_per_frame
        answer = int((batch.labels[0] != -100).sum())
        per_sample = shape.train_flops(frames, text, n_instr, answer, specs)
        total = batch_size * per_sample["total"]
        seconds = timing["step_ms"] / 1000
        row = {
            "gradient_checkpointing": ckpt,
            "status": "ok",
            **timing,
            "seq_len": seq,
            "tokens_per_s": batch_size * seq / seconds,
            "frames_per_s": batch_size * frames / seconds,
            "flops": {k: batch_size * v for k, v in per_sample.items()},
            "tflops_per_s": total / seconds / 1e12,
            "mfu": None if peak is None else total / seconds / peak,
        }
        results["rows"].append(row)
        log.info(
            "train ckpt=%s: %.1f ms/step, %.0f tok/s, mfu %s, peak %s GiB",
            ckpt,
            row["step_ms"],
            row["tokens_per_s"],
            row["mfu"],
            row["peak_alloc_gib"],
        )
        write_json(out, results)
        free_memory()
    del lm, batch, source
    free_memory()
    write_json(out, results)
    return results
