"""Every recipe parses and type-checks through the CLI; bad keys fail before any work."""

from pathlib import Path

import pytest

from lightning_viper.cli.main import parse_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "compare" not in p.parts)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_parses(recipe: Path) -> None:
    config = parse_recipe(recipe)
    assert config.model.class_path == "lightning_viper.module.VideoLM"
    assert config.data.class_path
    assert config.trainer.logger is not None, "every recipe logs to MLflow"


def test_recipes_exist() -> None:
    names = {str(p.relative_to(ROOT / "recipes")) for p in RECIPES}
    assert {
        "demo.yaml",
        "timeviper_9b/stage1.yaml",
        "timeviper_9b/stage2.yaml",
        "timeviper_9b/stage2_transv.yaml",
    } <= names


def test_wrong_key_fails_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_recipe(ROOT / "recipes/demo.yaml", "--model.init_args.learning_rate=0.1")
    assert "learning_rate" in capsys.readouterr().err


def test_wrong_type_fails_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_recipe(ROOT / "recipes/demo.yaml", "--model.init_args.lr=fast")
    assert "lr" in capsys.readouterr().err


def test_override_of_compression_parses() -> None:
    stages = '[{"class_path": "lightning_viper.compression.TransV", "init_args": {"layer": 3, "keep": 0.25}}]'
    config = parse_recipe(ROOT / "recipes/demo.yaml", f"--model.init_args.compression={stages}")
    (stage,) = config.model.init_args.compression
    assert stage.class_path == "lightning_viper.compression.TransV"
    assert stage.init_args.keep == 0.25


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_guards_long_runs(recipe: Path) -> None:
    """Every recipe stops on NaN, saves on SIGTERM/SIGINT and writes prediction files."""
    names = {str(cb.class_path).rsplit(".", 1)[-1] for cb in parse_recipe(recipe).trainer.callbacks}
    assert {"NanGuard", "Preemption", "ModelCheckpoint", "PredictionWriter"} <= names, names
