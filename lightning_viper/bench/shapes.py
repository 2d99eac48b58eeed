"""Read the FLOP-relevant shapes (:mod:`lightning_viper.bench.flops`) off built modules."""

from __future__ import annotations

from typing import Any

from torch import nn

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.nemotron_layers import SquaredReLUMLP
from lightning_viper.bench.flops import BackboneShape, EncoderShape, ProjectorShape, StageSpec, VideoLMShape
from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.transv import TransV
from lightning_viper.encoders.base import VisionEncoder
from lightning_viper.projectors.base import Projector
from lightning_viper.projectors.tome import ToMeProjector


def _first(module: nn.Module, kind: type) -> Any:
    return next((m for m in module.modules() if isinstance(m, kind)), None)


def backbone_shape(backbone: Backbone) -> BackboneShape:
    """Widths of a Nemotron-H (Mamba-2 / attention / MLP) or Qwen2 ('decoder') backbone."""
    mamba = _first(backbone, Mamba2Mixer)
    attn = _first(backbone, GQAttention)
    mlp = _first(backbone, SquaredReLUMLP)
    if attn is None:  # Qwen2-style decoder layers (or no attention at all)
        attn = next((m for m in backbone.modules() if hasattr(m, "num_kv_heads") and hasattr(m, "q_proj")), None)
    gate: Any = next((m for m in backbone.modules() if hasattr(m, "gate_proj")), None)
    if mlp is not None:
        intermediate = int(mlp.up_proj.out_features)
    else:
        intermediate = int(gate.gate_proj.out_features) if gate is not None else 0
    q_heads = int(attn.num_heads) if attn is not None else 0
    kv_heads = int(attn.num_kv_heads) if attn is not None else 0
    head_dim = int(attn.head_dim) if attn is not None else 0
    kw: dict[str, Any] = {}
    if isinstance(mamba, Mamba2Mixer):
        kw = dict(
            mamba_heads=mamba.num_heads,
            mamba_head_dim=mamba.head_dim,
            state=mamba.state_size,
            groups=mamba.n_groups,
            conv_kernel=int(mamba.conv1d.kernel_size[0]),
            chunk=mamba.chunk_size,
        )
    return BackboneShape(
        hidden=backbone.hidden_size,
        layer_kinds=tuple(backbone.layer_kinds),
        vocab=backbone.vocab_size,
        intermediate=intermediate,
        q_heads=q_heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        **kw,
    )


def encoder_shape(encoder: VisionEncoder) -> EncoderShape:
    """A transformers ViT tower (SigLIP/CLIP): layers counted up to ``feature_layer`` (the useful work)."""
    config = getattr(getattr(encoder, "model", None), "config", None)
    if config is None:
        raise ValueError(f"cannot read the shape of encoder {type(encoder).__name__}: no .model.config")
    total = int(config.num_hidden_layers)
    feature = int(getattr(encoder, "feature_layer", -1))
    layers = total + feature + 1 if feature < 0 else feature + 1
    return EncoderShape(
        image_size=encoder.image_size,
        patch_size=int(config.patch_size),
        hidden=int(config.hidden_size),
        intermediate=int(config.intermediate_size),
        layers=layers,
        channels=int(getattr(config, "num_channels", 3)),
    )


def projector_shape(projector: Projector, encoder: VisionEncoder, llm_dim: int) -> ProjectorShape:
    n = projector.tokens_per_frame(encoder.num_patches)
    return ProjectorShape(
        vision_dim=encoder.embed_dim,
        llm_dim=llm_dim,
        patches=encoder.num_patches,
        tokens_per_frame=n,
        tome=isinstance(projector, ToMeProjector),
    )


def stage_specs(stages: list[CompressionStage]) -> list[StageSpec]:
    return [
        StageSpec(
            layer=s.layer,
            keep=s.keep,
            transfer=isinstance(s, TransV),
            attention=getattr(s, "selector", "uniform") == "attention",
        )
        for s in stages
    ]


def model_shape(encoder: VisionEncoder, projector: Projector, backbone: Backbone) -> VideoLMShape:
    return VideoLMShape(
        encoder_shape(encoder), projector_shape(projector, encoder, backbone.hidden_size), backbone_shape(backbone)
    )
