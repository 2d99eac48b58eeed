"""Named Nemotron-H configurations (builders only; the generic model is NemotronHBackbone)."""

from __future__ import annotations

from typing import Any

from lightning_viper.backbones.nemotron_h import NemotronHBackbone

NANO_9B_V2_PATTERN = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
NANO_12B_V2_PATTERN = "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-"


def _nano_v2(**settings: Any) -> NemotronHBackbone:
    base: dict[str, Any] = dict(
        vocab_size=131072,
        num_attention_heads=40,
        num_key_value_heads=8,
        head_dim=128,
        mamba_num_heads=128,
        mamba_head_dim=80,
        ssm_state_size=128,
        n_groups=8,
        conv_kernel=4,
        chunk_size=256,
        mlp_hidden_act="relu2",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
        use_bias=False,
        use_conv_bias=True,
    )
    base.update(settings)
    return NemotronHBackbone(**base)


def nemotron_nano_9b_v2(**overrides: Any) -> NemotronHBackbone:
    """NVIDIA-Nemotron-Nano-9B-v2: 56 layers (27 Mamba-2, 4 attention, 25 MLP), hidden 4480."""
    return _nano_v2(**{"pattern": NANO_9B_V2_PATTERN, "hidden_size": 4480, "intermediate_size": 15680, **overrides})


def nemotron_nano_12b_v2(**overrides: Any) -> NemotronHBackbone:
    """NVIDIA-Nemotron-Nano-12B-v2(-Base): 62 layers (28 Mamba-2, 6 attention, 28 MLP), hidden 5120."""
    return _nano_v2(**{"pattern": NANO_12B_V2_PATTERN, "hidden_size": 5120, "intermediate_size": 20480, **overrides})


def tiny_hybrid(**overrides: Any) -> NemotronHBackbone:
    """Six layers with every kind ('M-*M-*'), width 64: for tests and the CPU demo."""
    settings: dict[str, Any] = dict(
        pattern="M-*M-*",
        hidden_size=64,
        vocab_size=512,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        mamba_num_heads=8,
        mamba_head_dim=16,
        ssm_state_size=16,
        n_groups=2,
        conv_kernel=4,
        chunk_size=64,
        intermediate_size=128,
    )
    settings.update(overrides)
    return NemotronHBackbone(**settings)
