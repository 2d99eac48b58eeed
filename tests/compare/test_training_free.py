"""Evaluation-only comparisons: the spec fields, the commands they become, plain overrides, the budget."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
import yaml

from lightning_viper.backbones import NemotronHBackbone
from lightning_viper.bench.shapes import model_shape, stage_specs
from lightning_viper.cli.viper import main as viper_main
from lightning_viper.compare import RunRecord, compare, load_spec
from lightning_viper.compare.budget import prefill_budget, stage_counts, vision_per_layer
from lightning_viper.compare.report import aggregate, layer_profile, table
from lightning_viper.compression import TokenDrop, TransV
from lightning_viper.encoders import SiglipEncoder
from lightning_viper.module import VideoLM
from lightning_viper.projectors import ToMeProjector


def eval_spec(spec_file: Path, extra: str) -> Path:
    text = spec_file.read_text().replace("seeds: [0, 1]\n", "seeds: [0]\n" + extra)
    path = spec_file.with_name("eval.yaml")
    path.write_text(text)
    return path


def test_spec_fields(spec_file: Path, tmp_path: Path) -> None:
    assert load_spec(spec_file).train is True and load_spec(spec_file).checkpoint is None
    spec = load_spec(eval_spec(spec_file, f"train: false\ncheckpoint: {tmp_path / 'm.ckpt'}\n"))
    assert spec.train is False and spec.checkpoint == tmp_path / "m.ckpt"
    with pytest.raises(ValueError, match="only read with train: false"):
        load_spec(eval_spec(spec_file, "checkpoint: m.ckpt\n"))
    with pytest.raises(ValueError, match="train must be true or false"):
        load_spec(eval_spec(spec_file, "train: maybe\n"))


def test_overrides_with_or_without_dashes(spec_file: Path) -> None:
    text = spec_file.read_text().replace('["--trainer.limit_val_batches=1"]', '["trainer.limit_val_batches=1"]')
    spec_file.write_text(text)
    assert load_spec(spec_file).overrides == ["--trainer.limit_val_batches=1"]  # old and new forms agree
    spec_file.write_text(text.replace("trainer.limit_val_batches=1", "trainer.limit_val_batches"))
    with pytest.raises(ValueError, match="key=value"):
        load_spec(spec_file)


def test_viper_compare_takes_plain_overrides(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    viper_main(["compare", str(spec_file), "--override", "trainer.max_steps=7", f"--output={out}",
                "--dry_run=true", "--", "--data.init_args.num_test=5"])  # fmt: skip
    old = tmp_path / "old"
    viper_main(
        ["compare", str(spec_file), '--overrides=["--trainer.max_steps=7"]', f"--output={old}", "--dry_run=true"]
    )
    first = shlex.split((out / "commands.sh").read_text().splitlines()[0])
    assert first[-2:] == ["--trainer.max_steps=7", "--data.init_args.num_test=5"]
    assert shlex.split((old / "commands.sh").read_text().splitlines()[0])[-1] == "--trainer.max_steps=7"


def test_dry_run_fits_once_then_only_tests(spec_file: Path, tmp_path: Path) -> None:
    out = compare(str(eval_spec(spec_file, "train: false\n")), output=str(tmp_path / "r"), dry_run=True)
    lines = [shlex.split(line) for line in (out / "commands.sh").read_text().splitlines()]
    assert [cmd[3] for cmd in lines] == ["fit"] + ["test"] * 4  # one fit, 2 strategies x 2 frame counts
    assert all("--ckpt_path" not in cmd for cmd in lines)
    model = yaml.safe_load((out / "runs" / "_checkpoint-s0" / "compare.yaml").read_text())
    assert "compression" not in model["model"]["init_args"]  # the base recipe's own model
    assert model["trainer"]["logger"]["init_args"]["tags"]["compare.role"] == "checkpoint"
    patch = yaml.safe_load((out / "runs" / "transv-s0-f8" / "compare.yaml").read_text())
    init = patch["model"]["init_args"]
    assert init["init_from"] == str(out / "runs" / "_checkpoint-s0" / "checkpoints" / "last.ckpt")
    assert init["init_parts"] == ["encoder", "projector", "backbone"]  # stages start fresh
    assert init["compression"][0]["class_path"] == "lightning_viper.compression.TransV"


def test_ckpt_path_argument_skips_the_fit(spec_file: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "given.ckpt"
    out = compare(str(spec_file), ckpt_path=str(ckpt), output=str(tmp_path / "r"), dry_run=True)
    lines = (out / "commands.sh").read_text().splitlines()
    assert len(lines) == 8 and all(shlex.split(line)[3] == "test" for line in lines)  # 2 x 2 frames x 2 seeds
    patch = yaml.safe_load((out / "runs" / "none-s1-f4" / "compare.yaml").read_text())
    assert patch["model"]["init_args"]["init_from"] == str(ckpt)


def test_missing_checkpoint_is_named(spec_file: Path, tmp_path: Path) -> None:
    from lightning_viper.compare import CompareError

    with pytest.raises(CompareError, match=r"nowhere\.ckpt does not exist: train it first"):
        compare(str(spec_file), ckpt_path=str(tmp_path / "nowhere.ckpt"), output=str(tmp_path / "r"))


def test_vision_per_layer_from_stage_records() -> None:
    metrics = {"test/eff/stage1_L4_vision_after": 3.0, "test/eff/stage0_L1_vision_after": 16.0, "test/x": 1.0}
    assert stage_counts(metrics) == [(1, 16.0), (4, 3.0)]
    assert vision_per_layer(6, 32.0, stage_counts(metrics)) == [32, 16, 16, 16, 3, 3]
    assert vision_per_layer(3, 8.0, [(0, 5.0), (0, 2.0)]) == [2, 2, 2]  # two stages before one layer
    assert layer_profile([32, 16, 16, 16, 3, 3]) == "32 → 16 @L1 → 3 @L4"


def tiny_model(stages: list) -> VideoLM:
    torch.manual_seed(0)
    encoder = SiglipEncoder(hidden_size=48, num_layers=3, num_heads=4, intermediate_size=96, patch_size=4)
    backbone = NemotronHBackbone(
        pattern="M-*M-*", hidden_size=64, vocab_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16, n_groups=2, conv_kernel=4, chunk_size=64,
        intermediate_size=128,
    )  # fmt: skip
    return VideoLM(encoder, ToMeProjector(4, 4), backbone, stages)


@pytest.mark.parametrize("transfer", [False, True])
def test_budget_equals_the_bench_flop_count(transfer: bool) -> None:
    """With measured counts equal to the keep fractions, the budget is bench.flops' own prefill count."""
    cls = TransV if transfer else TokenDrop
    stages = [cls(1, 0.5), cls(5, 0.125, selector="attention")]
    model = tiny_model(stages)
    text, instruction, frames = 20, 6, 8
    metrics = {
        "test/eff/frames": float(frames),
        "test/eff/vision_tokens": 32.0,  # 8 frames x ToMe's 4
        "test/eff/stage0_L1_vision_after": 16.0,
        "test/eff/stage1_L5_vision_after": 4.0,
        "test/eff/vision_tokens_final": 4.0,
        "test/eff/seq_len_final": 4.0 + text,
    }
    budget = prefill_budget(model, metrics, float(instruction))
    shape = model_shape(model.encoder, model.projector, model.backbone)
    expected = shape.prefill_flops(frames, text, instruction, stage_specs(model.stages()))
    assert budget["test/eff/gflops_prefill"] == pytest.approx(expected["total"] / 1e9, rel=1e-12)
    assert budget["test/eff/gflops_llm"] == pytest.approx((expected["backbone"] + expected["compression"]) / 1e9)
    assert [budget[f"test/eff/vision_L{i}"] for i in range(6)] == [32, 16, 16, 16, 16, 4]
    assert budget["test/eff/vision_mean_per_layer"] == pytest.approx(100 / 6)


def test_report_shows_the_budget_columns() -> None:
    def rec(variant: str, acc: float, per_layer: list[float], gflops: float) -> RunRecord:
        metrics = {f"test/eff/vision_L{i}": v for i, v in enumerate(per_layer)}
        metrics |= {"test/mcq/acc": acc, "test/eff/vision_tokens": per_layer[0], "test/eff/gflops_prefill": gflops}
        metrics |= {"test/eff/vision_tokens_final": per_layer[-1], "test/eff/vision_mean_per_layer": 5.0}
        return RunRecord(variant, 0, "recipe", variant, metrics, {})

    header, body = table(aggregate([rec("none", 1.0, [8, 8, 8], 0.5), rec("drop", 0.75, [8, 4, 2], 0.3125)]))
    assert header[5:9] == [
        "kept (fraction)", "vision tokens by layer", "vision tokens per layer (mean)", "prefill GFLOPs/sample",
    ]  # fmt: skip
    assert body[0][:8] == ["drop", "1", "0.750", "8.0", "2.0", "0.250", "8 → 4 @L1 → 2 @L2", "5.0"]  # by name
    assert body[0][8] == "0.3125" and body[1][6] == "8"
