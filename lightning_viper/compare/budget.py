"""The budget of a tested strategy: vision tokens at every layer and prefill FLOPs, logged to MLflow.

A comparison adds :class:`BudgetLogger` to every run it starts. When ``lightning test`` ends, the
callback reads what the module logged for the generated answers (``test/eff/vision_tokens`` entering
the LLM, ``seq_len_final``, and each compression stage's ``stage{i}_L{layer}_vision_after`` from the
backbone's StageRecords) and logs, per sample:

* ``test/eff/vision_L{l}``: vision tokens that layer ``l`` sees, for every layer;
* ``test/eff/vision_mean_per_layer``: their mean over the layers (the LLM's token budget);
* ``test/eff/gflops_prefill``: prefill FLOPs to the first token (encoder, projector, the backbone
  at the measured per-layer lengths, the stages' own work), with :mod:`lightning_viper.bench.flops`;
* ``test/eff/gflops_llm``: the backbone and stage part of it;

and the run's parameter counts (a test-only run has no fit to log them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from lightning_viper.bench.flops import StageSpec, stage_flops
from lightning_viper.bench.shapes import model_shape
from lightning_viper.compression.transv import TransV
from lightning_viper.module import VideoLM
from lightning_viper.text.tokenizer import video_token_id

log = logging.getLogger(__name__)

PREFIX = "test/eff/"
_STAGE = re.compile(r"^stage(\d+)_L(\d+)_vision_after$")


def stage_counts(metrics: Mapping[str, float]) -> list[tuple[int, float]]:
    """(layer, vision tokens after) of every logged stage, in stage order."""
    found = []
    for key, value in metrics.items():
        m = _STAGE.match(key.removeprefix(PREFIX)) if key.startswith(PREFIX) else None
        if m:
            found.append((int(m.group(1)), int(m.group(2)), float(value)))
    return [(layer, after) for _, layer, after in sorted(found)]


def vision_per_layer(num_layers: int, vision_in: float, stages: Sequence[tuple[int, float]]) -> list[float]:
    """Vision tokens layer l sees: what entered the LLM, replaced by each stage's count from its layer on."""
    out, current, i = [], vision_in, 0
    for layer in range(num_layers):
        while i < len(stages) and stages[i][0] == layer:
            current = stages[i][1]
            i += 1
        out.append(current)
    return out


def prefill_budget(module: VideoLM, metrics: Mapping[str, float], instruction: float) -> dict[str, float]:
    """Per-sample budget figures (see the module docstring) of a VideoLM from its test metrics."""
    shape = model_shape(module.encoder, module.projector, module.backbone)
    layers = len(shape.backbone.layer_kinds)
    vision_in = float(metrics[PREFIX + "vision_tokens"])
    text = float(metrics[PREFIX + "seq_len_final"]) - float(metrics[PREFIX + "vision_tokens_final"])
    frames = float(metrics.get(PREFIX + "frames", 0.0))
    stages = stage_counts(metrics)
    vision = vision_per_layer(layers, vision_in, stages)
    backbone = shape.backbone.forward_flops([round(v + text) for v in vision], logit_tokens=1)
    extra = 0.0
    for stage, (layer, after) in zip(module.stages(), stages, strict=True):
        before = vision[layer - 1] if layer > 0 else vision_in
        spec = StageSpec(layer, stage.keep, isinstance(stage, TransV), stage.requires_attention_layer)
        extra += stage_flops(
            shape.backbone, spec, round(before + text), round(before), round(after), round(instruction)
        )
    vision_side = frames * (shape.encoder.flops_per_frame() + shape.projector.flops_per_frame())
    out = {f"{PREFIX}vision_L{i}": v for i, v in enumerate(vision)}
    out[PREFIX + "vision_mean_per_layer"] = sum(vision) / max(1, layers)
    out[PREFIX + "gflops_llm"] = (backbone + extra) / 1e9
    out[PREFIX + "gflops_prefill"] = (vision_side + backbone + extra) / 1e9
    return out


class BudgetLogger(Callback):
    """Logs a tested strategy's budget (module docstring) when ``lightning test`` ends."""

    def __init__(self) -> None:
        self.instruction_tokens = 0.0  # prompt tokens after the video, summed over test samples
        self.samples = 0

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None or not hasattr(batch, "prompt_lengths"):
            return
        placeholder = (batch.input_ids == video_token_id(tokenizer)).long().argmax(1)  # (B,)
        self.instruction_tokens += float((batch.prompt_lengths - 1 - placeholder).sum())
        self.samples += int(batch.prompt_lengths.shape[0])

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor | float)}
        if not isinstance(pl_module, VideoLM):
            return
        if PREFIX + "vision_tokens" not in metrics or PREFIX + "seq_len_final" not in metrics:
            log.warning("BudgetLogger: no test/eff/ token counts were logged (no generation?): no budget")
            return
        budget = prefill_budget(pl_module, metrics, self.instruction_tokens / max(1, self.samples))
        for logger in trainer.loggers:
            logger.log_metrics(budget, step=trainer.global_step)
            logger.log_hyperparams(pl_module.parameter_counts())
        log.info(
            "budget: %.4g GFLOPs per sample to the first token, %.1f vision tokens per layer",
            budget[PREFIX + "gflops_prefill"],
            budget[PREFIX + "vision_mean_per_layer"],
        )
