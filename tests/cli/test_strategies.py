"""Every compression strategy switches in by a CLI override and trains + tests on CPU."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lightning_viper.cli.main import VideoCLI

# the demo backbone is "M-*M-*": attention at layers 2 and 5
STRATEGIES = {
    "drop_uniform": [{"class_path": "lightning_viper.compression.TokenDrop", "init_args": {"layer": 1, "keep": 0.5}}],
    "drop_attention": [
        {
            "class_path": "lightning_viper.compression.TokenDrop",
            "init_args": {"layer": 2, "keep": 0.5, "selector": "attention"},
        }
    ],
    "transv_uniform": [{"class_path": "lightning_viper.compression.TransV", "init_args": {"layer": 1, "keep": 0.5}}],
    "transv_attention": [
        {
            "class_path": "lightning_viper.compression.TransV",
            "init_args": {"layer": 5, "keep": 0.25, "selector": "attention"},
        }
    ],
    "transv_two_stage": [
        {"class_path": "lightning_viper.compression.TransV", "init_args": {"layer": 1, "keep": 0.5}},
        {
            "class_path": "lightning_viper.compression.TransV",
            "init_args": {"layer": 5, "keep": 0.1, "selector": "attention"},
        },
    ],
    "fastv": [{"class_path": "lightning_viper.compression.FastVDrop", "init_args": {"layer": 2, "keep": 0.5}}],
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_trains_and_tests(name: str, demo_cli: Callable[..., VideoCLI]) -> None:
    stages = STRATEGIES[name]
    override = f"--model.init_args.compression={json.dumps(stages)}"
    fit = demo_cli("fit", override, "--trainer.fast_dev_run=true")
    assert fit.trainer.global_step == 1
    assert len(fit.model.compression) == len(stages)
    test = demo_cli("test", override, "--trainer.fast_dev_run=true")
    metrics = test.trainer.callback_metrics
    kept = metrics["test/eff/vision_tokens_final"] / metrics["test/eff/vision_tokens"]
    expected = stages[-1]["init_args"]["keep"]
    assert float(kept) == pytest.approx(expected, abs=0.02)
    for i, stage in enumerate(stages):
        layer = stage["init_args"]["layer"]
        assert f"test/eff/stage{i}_L{layer}_vision_after" in metrics


def test_mlp_projector_variant(demo_cli: Callable[..., VideoCLI]) -> None:
    projector = {"class_path": "lightning_viper.projectors.MLPProjector", "init_args": {"tokens_per_frame": 4}}
    fit = demo_cli("fit", f"--model.init_args.projector={json.dumps(projector)}", "--trainer.fast_dev_run=true")
    assert fit.trainer.global_step == 1


def test_bad_stage_layer_is_rejected_naming_the_stage(demo_cli: Callable[..., VideoCLI]) -> None:
    stages = [
        {
            "class_path": "lightning_viper.compression.TokenDrop",
            "init_args": {"layer": 3, "keep": 0.5, "selector": "attention"},
        }
    ]
    with pytest.raises((ValueError, SystemExit), match="TokenDrop"):
        demo_cli("fit", f"--model.init_args.compression={json.dumps(stages)}", "--trainer.fast_dev_run=true")


def test_temporal_merge_trains_and_tests(demo_cli: Callable[..., VideoCLI]) -> None:
    """TemporalMerge on the projector's tokens (ToMe: 4 per frame): the content decides how many stay."""
    stages = [
        {
            "class_path": "lightning_viper.compression.TemporalMerge",
            "init_args": {"layer": 0, "threshold": 0.5, "tokens_per_frame": 4},
        },
        {"class_path": "lightning_viper.compression.TokenDrop", "init_args": {"layer": 2, "keep": 0.25}},
    ]
    override = f"--model.init_args.compression={json.dumps(stages)}"
    assert demo_cli("fit", override, "--trainer.fast_dev_run=true").trainer.global_step == 1
    metrics = demo_cli("test", override, "--trainer.fast_dev_run=true").trainer.callback_metrics
    before, after = metrics["test/eff/stage0_L0_vision_before"], metrics["test/eff/stage0_L0_vision_after"]
    assert float(before) == 32  # 8 frames x 4 tokens
    assert 4 <= float(after) < 32  # the first frame is never merged away; repeats in a static video are
    assert float(metrics["test/eff/vision_tokens_final"]) <= 8  # then 25% of the original 32 at most


def test_visionzip_projector_trains_and_tests(demo_cli: Callable[..., VideoCLI]) -> None:
    projector = {
        "class_path": "lightning_viper.projectors.VisionZipProjector",
        "init_args": {"dominant": 3, "contextual": 2},
    }
    override = f"--model.init_args.projector={json.dumps(projector)}"
    assert demo_cli("fit", override, "--trainer.fast_dev_run=true").trainer.global_step == 1
    metrics = demo_cli("test", override, "--trainer.fast_dev_run=true").trainer.callback_metrics
    assert float(metrics["test/eff/vision_tokens"]) == 8 * 5  # 8 frames x (3 dominant + 2 contextual)
