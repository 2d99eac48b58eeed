"""Presets: the 9B layout on the meta device, the tiny model, and a long sequence on CPU."""

from __future__ import annotations

import time

import torch

from lightning_viper.backbones.nemotron_h_presets import (
    hybrid_2b,
    nemotron_nano_9b_v2,
    nemotron_nano_12b_v2,
    tiny_hybrid,
)
from tests.backbones.test_nemotron_h_helpers import packed_state


def hand_count(pattern: str, d: int, vocab: int, heads: int, kv: int, hd: int, mh: int, mp: int, n: int, g: int,
               k: int, ffn: int) -> int:  # fmt: skip
    """Parameters of a Nemotron-H stack written out from the layer equations."""
    inner = mh * mp
    conv = inner + 2 * g * n
    mamba = d * (2 * inner + 2 * g * n + mh) + conv * k + conv + 3 * mh + inner + inner * d
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    mlp = 2 * d * ffn
    per_kind = {"M": mamba, "*": attention, "-": mlp}
    return 2 * vocab * d + d + sum(per_kind[ch] + d for ch in pattern)


def test_9b_preset_parameter_count_on_meta():
    from transformers import NemotronHConfig, NemotronHForCausalLM

    with torch.device("meta"):
        ours = nemotron_nano_9b_v2()
        config = NemotronHConfig(
            hybrid_override_pattern=ours.pattern, hidden_size=4480, vocab_size=131072, num_attention_heads=40,
            num_key_value_heads=8, head_dim=128, mamba_num_heads=128, mamba_head_dim=80, ssm_state_size=128,
            n_groups=8, conv_kernel=4, chunk_size=256, intermediate_size=15680, mlp_hidden_act="relu2",
        )  # fmt: skip
        reference = NemotronHForCausalLM(config)
    assert ours.num_layers == 56
    assert ours.layer_kinds.count("mamba") == 27 and ours.layer_kinds.count("attention") == 4
    assert [i for i, kind in enumerate(ours.layer_kinds) if kind == "attention"] == [14, 21, 30, 39]
    count = ours.param_count()
    assert count == sum(p.numel() for p in reference.parameters())
    assert count == hand_count(ours.pattern, 4480, 131072, 40, 8, 128, 128, 80, 128, 8, 4, 15680)
    assert 8.8e9 < count < 9.0e9


def test_12b_preset_layout_on_meta():
    with torch.device("meta"):
        model = nemotron_nano_12b_v2()
    assert model.num_layers == 62 and model.layer_kinds.count("attention") == 6
    assert model.param_count() == hand_count(model.pattern, 5120, 131072, 40, 8, 128, 128, 80, 128, 8, 4, 20480)


def test_2b_preset_layout_on_meta():
    """The training benchmark's hybrid: 52 layers, attention at 11/24/37/50, 2.09B parameters."""
    with torch.device("meta"):
        model = hybrid_2b()
    assert model.num_layers == 52 and model.layer_kinds.count("mamba") == 24
    assert [i for i, kind in enumerate(model.layer_kinds) if kind == "attention"] == [11, 24, 37, 50]
    count = model.param_count()
    assert count == hand_count(model.pattern, 2048, 131072, 16, 4, 128, 64, 64, 128, 8, 4, 8192)
    assert 2.05e9 < count < 2.15e9


def test_tiny_hybrid_has_every_kind_and_runs():
    model = tiny_hybrid(kernels="torch").eval()
    assert set(model.layer_kinds) == {"mamba", "attention", "mlp"}
    state = packed_state([[9, 4], [7]])
    ids = torch.randint(0, model.vocab_size, state.mask.shape)
    with torch.no_grad():
        logits = model.logits(model(model.embed(ids), state).hidden)
    assert logits.shape == (2, 13, model.vocab_size) and torch.isfinite(logits).all()


def test_long_sequence_runs_in_bounded_time_on_cpu():
    """16k tokens through a tiny-width hybrid with chunked prefill: finite, and a few seconds."""
    torch.set_num_threads(1)
    model = tiny_hybrid(
        hidden_size=32, num_attention_heads=2, num_key_value_heads=1, mamba_num_heads=4, mamba_head_dim=8,
        ssm_state_size=8, n_groups=1, intermediate_size=64, chunk_size=128, prefill_chunk=2048, kernels="torch",
    ).eval()  # fmt: skip
    t = 16384
    state = packed_state([[t]])
    ids = torch.randint(0, model.vocab_size, (1, t))
    start = time.perf_counter()
    with torch.no_grad():
        hidden = model(model.embed(ids), state).hidden
    elapsed = time.perf_counter() - start
    assert torch.isfinite(hidden).all()
    assert elapsed < 60, f"16k-token prefill took {elapsed:.1f}s"


def test_hub_style_9b_config_maps_to_the_preset():
    """A config.json in the NVIDIA hub style (pattern string, legacy keys) gives the preset's model."""
    from lightning_viper.backbones.nemotron_h import NemotronHBackbone
    from lightning_viper.backbones.nemotron_h_loading import config_to_kwargs

    hub = {
        "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "auto_map": {},
        "torch_dtype": "bfloat16",
        "hybrid_override_pattern": "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-", "num_hidden_layers": 56,
        "hidden_size": 4480, "intermediate_size": 15680, "vocab_size": 131072, "num_attention_heads": 40,
        "num_key_value_heads": 8, "head_dim": 128, "mamba_num_heads": 128, "mamba_head_dim": 80, "ssm_state_size": 128,
        "n_groups": 8, "conv_kernel": 4, "chunk_size": 128, "expand": 2, "mamba_hidden_act": "silu",
        "mlp_hidden_act": "relu2", "layer_norm_epsilon": 1e-5, "time_step_limit": [0.0, "Infinity"],
        "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 1e-4, "time_step_rank": 256,
        "use_bias": False, "use_conv_bias": True, "mlp_bias": False, "attention_bias": False,
        "tie_word_embeddings": False, "sliding_window": None, "residual_in_fp32": False, "use_mamba_kernels": True,
    }  # fmt: skip
    kwargs = config_to_kwargs(hub)
    assert kwargs["time_step_limit"] == (0.001, float("inf"))
    with torch.device("meta"):
        model, preset = NemotronHBackbone(**kwargs), nemotron_nano_9b_v2()
    assert model.pattern == preset.pattern and model.param_count() == preset.param_count()
