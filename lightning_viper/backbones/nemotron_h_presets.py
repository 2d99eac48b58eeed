"""Named Nemotron-H shapes. The generic model is :class:`~lightning_viper.backbones.nemotron_h.NemotronHBackbone`;
real weights come from :func:`~lightning_viper.backbones.nemotron_h_loading.load_nemotron_h`."""

from __future__ import annotations

from typing import Any

from lightning_viper.backbones.nemotron_h import NemotronHBackbone

NANO_9B_V2_PATTERN = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
NANO_12B_V2_PATTERN = "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-"
HYBRID_2B_PATTERN = ("M-" * 5 + "M*-") * 4  # 52 layers: 24 Mamba-2, 4 attention, 24 MLP


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


def hybrid_2b(**overrides: Any) -> NemotronHBackbone:
    """A ~2.1B-parameter Nemotron-H-style hybrid (the training benchmark's backbone): 52 layers
    (24 Mamba-2, 4 attention at 11/24/37/50, 24 MLP), hidden 2048, Mamba-2 64 heads x 64
    (state 128, 8 groups, chunk 256), attention 16 query / 4 KV heads of 128, squared-ReLU FFN
    8192, vocabulary 131072 (untied). About 1.55B layer parameters + 0.54B embedding and head."""
    return _nano_v2(
        **{
            "pattern": HYBRID_2B_PATTERN,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "mamba_num_heads": 64,
            "mamba_head_dim": 64,
            **overrides,
        }
    )


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
