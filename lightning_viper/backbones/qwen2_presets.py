"""Named Qwen2 shapes. The generic model is :class:`~lightning_viper.backbones.qwen2.Qwen2Backbone`;
real weights come from :func:`~lightning_viper.backbones.qwen2_loading.load_qwen2`."""

from __future__ import annotations

from typing import Any

from lightning_viper.backbones.qwen2 import Qwen2Backbone


def qwen2_5_7b(**overrides: Any) -> Qwen2Backbone:
    """Qwen2.5-7B (the paper's Transformer comparison backbone), randomly initialised: 28 layers,
    hidden 3584, 28 query / 4 key-value heads of 128, FFN 18944, vocab 152064, theta 1e6, untied."""
    args: dict[str, Any] = dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        rope_theta=1_000_000.0,
        layer_norm_epsilon=1e-6,
        tie_word_embeddings=False,
    )
    args.update(overrides)
    return Qwen2Backbone(**args)


def tiny_qwen2(**overrides: Any) -> Qwen2Backbone:
    """A 4-layer, width-64 Qwen2 for CPU tests and the demo (vocab 512, 4 query / 2 kv heads)."""
    args: dict[str, Any] = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10_000.0,
        layer_norm_epsilon=1e-6,
        tie_word_embeddings=False,
    )
    args.update(overrides)
    return Qwen2Backbone(**args)
