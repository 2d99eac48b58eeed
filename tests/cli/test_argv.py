import pytest

from lightning_viper.cli.argv import config_as_recipe, plain_overrides


def test_config_becomes_recipe_for_the_recipe_verbs_only() -> None:
    assert config_as_recipe(["ask", "--config", "r.yaml", "v.mp4", "q"]) == ["ask", "--recipe", "r.yaml", "v.mp4", "q"]
    assert config_as_recipe(["analyze", "knockout", "--config=r.yaml"]) == ["analyze", "knockout", "--recipe=r.yaml"]
    assert config_as_recipe(["synth", "--config", "c.yaml"]) == ["synth", "--config", "c.yaml"]  # jsonargparse's own
    assert config_as_recipe([]) == []


def test_plain_overrides_become_the_verbs_list_option_item_by_item() -> None:
    args = ["compare", "s.yaml", "--override", "a.b=1", "--override=c=2", "--", "--d=3", "e=4"]
    assert plain_overrides(args) == [
        "compare", "s.yaml", "--override+=--a.b=1", "--override+=--c=2", "--override+=--d=3", "--override+=--e=4",
    ]  # fmt: skip
    assert plain_overrides(["analyze", "knockout", "--override", "data.init_args.batch_size=4"]) == [
        "analyze", "knockout", "--overrides+=--data.init_args.batch_size=4",
    ]  # fmt: skip
    assert plain_overrides(["export", "c.ckpt", "d", "r.yaml", "--override", "config=o.yaml"]) == [
        "export", "c.ckpt", "d", "r.yaml", "--overrides+=--config=o.yaml",
    ]  # fmt: skip
    assert plain_overrides(["synth", "--override", "x"]) == ["synth", "--override", "x"]  # not a verb with overrides
    old = ["compare", "s.yaml", '--overrides=["--trainer.max_steps=5"]']
    assert plain_overrides(old) == old  # the JSON-list form passes through
    with pytest.raises(SystemExit, match="needs a value"):
        plain_overrides(["compare", "s.yaml", "--override"])
    with pytest.raises(SystemExit, match="key=value"):
        plain_overrides(["analyze", "knockout", "--override", "batch_size"])
