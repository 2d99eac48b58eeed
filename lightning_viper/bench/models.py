"""Models and compression schedules the benchmarks run (random weights: speed does not depend on values).

* ``"paper"``: SigLIP so400m/14 at 384 px -> ToMe to 16 tokens per frame -> MLP -> Nemotron-Nano-9B-v2.
* ``"2b"``: the same encoder and projector with
  :func:`~lightning_viper.backbones.nemotron_h_presets.hybrid_2b`, the training benchmark's backbone.
* ``"tiny"``: a 2-layer SigLIP at 32 px and :func:`~lightning_viper.backbones.nemotron_h_presets.tiny_hybrid`
  (CPU tests).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_h_presets import hybrid_2b, nemotron_nano_9b_v2, tiny_hybrid
from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.token_drop import TokenDrop
from lightning_viper.compression.transv import TransV
from lightning_viper.encoders.siglip import SiglipEncoder, siglip_so400m
from lightning_viper.module import VideoLM
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.projectors.tome import ToMeProjector
from lightning_viper.text.tokenizer import build_demo_tokenizer, load_tokenizer

ModelName = Literal["paper", "2b", "tiny"]
Strategy = Literal["none", "transv", "uniform_drop"]
DType = Literal["bfloat16", "float32"]
STAGE2_TRAINABLE: list[Any] = ["projector", "backbone", "compression"]  # what trains in stage 2


def paper_layers(backbone: Backbone) -> tuple[int, int]:
    """The paper's two stage layers (7 and attention layer 39 of 56) scaled to ``backbone``'s depth:
    round(7/56 L) and the attention layer nearest round(39/56 L) (exactly 7, 39 on the 9B)."""
    n = backbone.num_layers
    first = min(n - 1, max(1, round(7 * n / 56)))
    attn = [i for i in range(first, n) if backbone.is_attention_layer(i)]
    if not attn:
        raise ValueError(f"the backbone has no attention layer at or after layer {first} for attention-guided dropping")
    target = round(39 * n / 56)
    return first, min(attn, key=lambda i: (abs(i - target), i))


def strategy_stages(strategy: Strategy, backbone: Backbone) -> list[CompressionStage]:
    """'none'; 'transv' = the paper's final setting (TransV uniform keep 0.5 at layer 7 + TransV
    attention-guided keep 0.1 at layer 39); 'uniform_drop' = plain TokenDrop, uniform, at the same
    layers and ratios (same token counts, no transfer)."""
    if strategy == "none":
        return []
    first, second = paper_layers(backbone)
    if strategy == "transv":
        return [TransV(first, 0.5, "uniform"), TransV(second, 0.1, "attention")]
    if strategy == "uniform_drop":
        return [TokenDrop(first, 0.5, "uniform"), TokenDrop(second, 0.1, "uniform")]
    raise ValueError(f"unknown strategy {strategy!r}: use 'none', 'transv' or 'uniform_drop'")


@contextmanager
def building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype`` (no float32 copy on the host)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def demo_tokenizer() -> PreTrainedTokenizerBase:
    """The project's small word-level tokenizer (has ``<video>``), built in a temporary directory."""
    return load_tokenizer(build_demo_tokenizer(tempfile.mkdtemp(prefix="viper-bench-tok-") + "/tok"))


def build_model(
    model: ModelName,
    strategy: Strategy,
    device: torch.device,
    dtype: DType = "bfloat16",
    micro_batch: int = 128,
    prefill_chunk: int | None = None,
    kernels: KernelChoice = "auto",
    gradient_checkpointing: bool = False,
    trainable: list[Any] | None = None,
    encoder_options: dict[str, Any] | None = None,
) -> VideoLM:
    """A randomly initialised :class:`VideoLM` of the named size, built on ``device`` in ``dtype``.

    ``encoder_options`` go to the vision tower (e.g. ``{"compile": true}``,
    :class:`~lightning_viper.encoders.hf_tower.HFVisionTower`)."""
    extra = dict(encoder_options or {})
    torch_dtype = getattr(torch, dtype)
    runtime = dict(prefill_chunk=prefill_chunk, kernels=kernels, gradient_checkpointing=gradient_checkpointing)
    with building_on(device, torch_dtype):
        if model == "tiny":
            encoder = SiglipEncoder(
                hidden_size=32,
                num_layers=2,
                num_heads=2,
                intermediate_size=64,
                patch_size=8,
                image_size=32,
                micro_batch=micro_batch,
                dtype=dtype,
                **extra,
            )
            projector = ToMeProjector(tokens_per_frame=4, num_heads=4)
            backbone: NemotronHBackbone = tiny_hybrid(**runtime)
        elif model in ("paper", "2b"):
            encoder = siglip_so400m(micro_batch=micro_batch, dtype=dtype, **extra)
            projector = ToMeProjector(tokens_per_frame=16, num_heads=16)
            backbone = nemotron_nano_9b_v2(**runtime) if model == "paper" else hybrid_2b(**runtime)
        else:
            raise ValueError(f"unknown model {model!r}: use 'paper', '2b' or 'tiny'")
        lm = VideoLM(
            encoder,
            projector,
            backbone,
            strategy_stages(strategy, backbone),
            trainable=trainable,
            tokenizer=demo_tokenizer(),
        )
    return lm.to(device=device, dtype=torch_dtype)
