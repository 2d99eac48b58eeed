from lightning_viper.cli.argv import config_as_recipe


def test_config_becomes_recipe_for_the_recipe_verbs_only() -> None:
    assert config_as_recipe(["ask", "--config", "r.yaml", "v.mp4", "q"]) == ["ask", "--recipe", "r.yaml", "v.mp4", "q"]
    assert config_as_recipe(["analyze", "knockout", "--config=r.yaml"]) == ["analyze", "knockout", "--recipe=r.yaml"]
    assert config_as_recipe(["synth", "--config", "c.yaml"]) == ["synth", "--config", "c.yaml"]  # jsonargparse's own
    assert config_as_recipe([]) == []
