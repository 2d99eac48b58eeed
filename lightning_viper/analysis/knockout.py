"""Attention knockout per layer: answer loss and task score with vision -> text flow removed.

For each layer l with a token mixer and each flow (V2I: vision -> instruction, V2R: vision ->
response), layer l's mixer runs with that flow's edges removed (:mod:`.mixers`) and every other
layer runs normally; the eval set's answer loss (teacher forced, per answer token) and task
score (greedy answers re-run with the knockout at every step, :mod:`.generate`) are measured.
A flow that matters at layer l costs score / raises the loss there; one whose information has
already moved elsewhere (e.g. into the instruction tokens) costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lightning_viper.analysis.edges import Flow
from lightning_viper.analysis.generate import greedy_full
from lightning_viper.analysis.mixers import Knockout
from lightning_viper.backbones.base import MixerOverride
from lightning_viper.batch import VideoBatch
from lightning_viper.metrics import TaskMetrics
from lightning_viper.module import VideoLM

Tick = Callable[[], None]  # called once per batch evaluated (a progress bar's update)


@dataclass
class Measurement:
    """One pass over the eval set."""

    loss: float  # mean cross-entropy per answer token (teacher forced)
    score: float  # mean task score per sample (MCQ: accuracy)
    samples: int
    answer_tokens: int


@dataclass
class KnockoutPoint(Measurement):
    layer: int = -1
    kind: str = ""  # the layer's kind: "mamba", "attention" or "decoder"
    flow: str = ""


@dataclass
class KnockoutResult:
    baseline: Measurement
    points: list[KnockoutPoint] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": asdict(self.baseline), "points": [asdict(p) for p in self.points]}


def mixer_layers(model: VideoLM) -> list[int]:
    """Layers with a token mixer (attention or Mamba-2); MLP layers move nothing between tokens."""
    return [i for i, kind in enumerate(model.backbone.layer_kinds) if kind != "mlp"]


@torch.no_grad()
def measure(
    model: VideoLM,
    batches: Iterable[VideoBatch],
    mixers: Mapping[int, MixerOverride] | None,
    tick: Tick | None = None,
) -> Measurement:
    """Answer loss and task score of ``model`` over ``batches`` with ``mixers`` overriding layers."""
    tokenizer = model.tokenizer
    if tokenizer is None or tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("the analysis needs the model's tokenizer with eos and pad tokens (from the datamodule)")
    loss_sum, tokens, scores = 0.0, 0, []
    for batch in batches:
        batch = batch.to(model.device)
        loss, _ = model(batch, mixers=mixers)
        n = int((batch.labels != -100).sum())
        loss_sum, tokens = loss_sum + float(loss) * n, tokens + n
        hidden, state, _ = model.embed_batch(batch, prompt_only=True)
        ids = greedy_full(
            model.backbone,
            hidden,
            state,
            model.stages(),
            int(model.hparams["max_new_tokens"]),
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            mixers,
        )
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        for text, meta in zip(texts, batch.meta, strict=True):
            if not meta.get("padding", False):
                scores.append(TaskMetrics.score_one(text.strip(), meta))
        if tick is not None:
            tick()
    if not scores:
        raise ValueError("the eval set is empty: nothing to measure")
    return Measurement(loss_sum / max(1, tokens), sum(scores) / len(scores), len(scores), tokens)


def knockout(
    model: VideoLM,
    batches: Sequence[VideoBatch],
    layers: Sequence[int] | None = None,
    flows: Sequence[Flow] = ("V2I", "V2R"),
    tick: Tick | None = None,
) -> KnockoutResult:
    """The baseline and one measurement per (layer, flow); ``layers`` default: every mixer layer."""
    chosen = list(layers) if layers is not None else mixer_layers(model)
    kinds = model.backbone.layer_kinds
    for layer in chosen:
        if not 0 <= layer < len(kinds) or kinds[layer] == "mlp":
            raise ValueError(f"layer {layer} has no token mixer to knock out; mixer layers: {mixer_layers(model)}")
    result = KnockoutResult(measure(model, batches, None, tick))
    for layer in chosen:
        for flow in flows:
            m = measure(model, batches, {layer: Knockout(flow)}, tick)
            result.points.append(KnockoutPoint(**asdict(m), layer=layer, kind=kinds[layer], flow=flow))
    return result
