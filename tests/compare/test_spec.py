"""Comparison files: parsing, expansion into runs, and the per-run config patch and commands."""

import sys
from pathlib import Path

import pytest
import yaml

from lightning_viper.compare import compare, load_spec
from lightning_viper.compare.commands import lightning_command, patch_config
from lightning_viper.compare.spec import absolute_tracking_uri

ROOT = Path(__file__).resolve().parents[2]


def test_load_and_expand(spec_file: Path, tracking_uri: str) -> None:
    spec = load_spec(spec_file)
    assert spec.name == "tiny" and spec.experiment == "compare-tiny" and spec.tracking_uri == tracking_uri
    assert spec.base == spec_file.parent / "base.yaml"
    keys = [v.key for v in spec.variants()]
    assert keys == [
        "none-s0-f4", "none-s1-f4", "none-s0-f8", "none-s1-f8",
        "transv-s0-f4", "transv-s1-f4", "transv-s0-f8", "transv-s1-f8",
    ]  # fmt: skip


def test_patch_isolates_each_run(spec_file: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_file)
    variant = spec.variants()[-1]  # transv, seed 1, 8 frames
    patch = patch_config(spec, variant, tmp_path / "run", parent_run_id="p123")
    assert patch["seed_everything"] == 1
    assert patch["data"] == {"init_args": {"num_frames": 8}}
    assert patch["model"]["init_args"]["compression"][0]["init_args"] == {"layer": 1, "keep": 0.5}
    assert patch["model"]["init_args"]["projector"]["init_args"] == {"tokens_per_frame": None}
    logger = patch["trainer"]["logger"]
    assert logger["class_path"] == "lightning_viper.tracking.MLflowLogger"  # the base recipe's own class
    assert logger["init_args"]["experiment_name"] == "compare-tiny"
    assert logger["init_args"]["tracking_uri"] == spec.tracking_uri
    assert logger["init_args"]["tags"] == {
        "owner": "me", "compare": "tiny", "variant": "transv", "seed": "1", "frames": "8", "mlflow.parentRunId": "p123",
    }  # fmt: skip
    ckpt, lr_monitor, budget = patch["trainer"]["callbacks"]
    assert budget == {"class_path": "lightning_viper.compare.budget.BudgetLogger"}
    assert "init_from" not in patch["model"]["init_args"]  # trained comparisons load nothing
    assert ckpt["init_args"] == {
        "dirpath": str(tmp_path / "run" / "checkpoints"),
        "monitor": "val/loss",
        "save_last": True,
    }
    assert lr_monitor["class_path"].endswith("LearningRateMonitor")
    assert patch["trainer"]["default_root_dir"] == str(tmp_path / "run")


def test_commands(spec_file: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_file)
    patch = tmp_path / "p.yaml"
    fit = lightning_command("fit", spec, patch, ["--trainer.max_steps=5"])
    assert fit == [
        sys.executable, "-m", "lightning_viper.cli.main", "fit", "--config", str(spec.base), "--config", str(patch),
        "--trainer.limit_val_batches=1", "--trainer.max_steps=5",
    ]  # fmt: skip
    assert lightning_command("test", spec, patch, [])[-2:] == ["--ckpt_path", "last"]


def test_dry_run_writes_patches_and_commands(spec_file: Path, tmp_path: Path) -> None:
    out = compare(str(spec_file), ["--trainer.max_steps=2"], output=str(tmp_path / "report"), dry_run=True)
    lines = (out / "commands.sh").read_text().splitlines()
    assert len(lines) == 16 and lines[0].split()[3] == "fit" and lines[1].endswith("--ckpt_path last")
    patch = yaml.safe_load((out / "runs" / "none-s0-f4" / "compare.yaml").read_text())
    assert patch["model"]["init_args"] == {"compression": []}


def test_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: nowhere.yaml\nstrategies: [{name: a}]\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_spec(bad)
    (tmp_path / "base.yaml").write_text("{}\n")
    bad.write_text("base: base.yaml\nstrategies: [{name: a}, {name: a}]\n")
    with pytest.raises(ValueError, match="unique"):
        load_spec(bad)
    bad.write_text("base: base.yaml\nstrategy: []\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_spec(bad)


def test_relative_sqlite_uri_becomes_absolute(tmp_path: Path) -> None:
    assert absolute_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert absolute_tracking_uri("http://server:5000", tmp_path) == "http://server:5000"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", "demo_training_free"])
def test_demo_comparison_parses_through_the_cli(name: str, tmp_path: Path) -> None:
    """Every strategy of recipes/compare/<name>.yaml builds a config the `lightning` CLI accepts."""
    from lightning_viper.cli.main import parse_recipe

    spec = load_spec(ROOT / f"recipes/compare/{name}.yaml")
    checkpoint = None if spec.train else tmp_path / "model.ckpt"
    assert spec.base == ROOT / "recipes/demo.yaml"
    seen = set()
    for variant in spec.variants():
        if variant.strategy.name in seen:
            continue
        seen.add(variant.strategy.name)
        patch = tmp_path / f"{variant.key}.yaml"
        patch.write_text(yaml.safe_dump(patch_config(spec, variant, tmp_path / variant.key, None, checkpoint)))
        config = parse_recipe(spec.base, "--config", str(patch), *spec.overrides)
        stages = variant.strategy.compression
        assert [s.init_args.layer for s in config.model.init_args.compression] == [
            s["init_args"]["layer"] for s in stages
        ]
        assert config.data.init_args.num_frames == (variant.frames or 8)  # the training-free one keeps the recipe's
        assert config.model.init_args.init_from == (None if checkpoint is None else str(checkpoint))
        if variant.strategy.name == "none":
            assert config.model.init_args.projector.class_path.endswith("MLPProjector")
            assert config.model.init_args.projector.init_args.tokens_per_frame is None
    assert len(seen) == len(spec.strategies)
