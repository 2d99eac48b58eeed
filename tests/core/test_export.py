"""Export round trip: a VideoLM written as a directory loads back with one call and equal logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.cli.main import parse_recipe
from lightning_viper.export import PretrainedVideoLM, build, export, load, save
from lightning_viper.export.directory import WEIGHTS_FILE
from lightning_viper.module import VideoLM

from .test_module import make_batch

SPEC = {
    "class_path": "lightning_viper.module.VideoLM",
    "init_args": {
        "encoder": {"class_path": "lightning_viper.encoders.SiglipEncoder", "init_args": {"patch_size": 8}},
        "projector": {
            "class_path": "lightning_viper.projectors.ToMeProjector",
            "init_args": {"tokens_per_frame": 4, "num_heads": 2},
        },
        "backbone": {
            "class_path": "lightning_viper.backbones.NemotronHBackbone",
            "init_args": {"pattern": "M-*M-*", "vocab_size": 512, "tie_word_embeddings": True},
        },
        "compression": [
            {"class_path": "lightning_viper.compression.TransV", "init_args": {"layer": 1, "keep": 0.5}},
            {
                "class_path": "lightning_viper.compression.TokenDrop",
                "init_args": {"layer": 5, "keep": 0.25, "selector": "attention", "rule": "reference"},
            },
        ],
        "trainable": ["projector", "compression"],
    },
}


def trained_model() -> VideoLM:
    torch.manual_seed(0)
    model = build(SPEC)
    with torch.no_grad():
        model.stages()[0].alpha.fill_(0.8)  # a trained, non-zero gate
    return model.eval()


@torch.no_grad()
def logits(model: VideoLM, batch) -> torch.Tensor:
    loss, out = model(batch)
    return torch.cat([loss.view(1), model.backbone.logits(out.hidden).flatten()])


def test_round_trip_equal_logits(tmp_path: Path, demo_tokenizer) -> None:
    model = trained_model()
    model.tokenizer = demo_tokenizer
    batch = make_batch(demo_tokenizer, [2, 3], ["A", "B. green"])
    save(model, tmp_path / "out", SPEC, demo_tokenizer, {"image_size": 32, "fps": 1.0, "max_frames": 8})
    back = load(tmp_path / "out")
    assert torch.equal(logits(back, batch), logits(model, batch))
    assert back.backbone.lm_head.weight is back.backbone.embeddings.weight  # tied weights stay tied
    assert back.tokenizer is not None and len(back.tokenizer) == len(demo_tokenizer)
    assert back.strategy_name() == model.strategy_name()


def test_pretrained_in_a_recipe_sets_training_options(tmp_path: Path, demo_tokenizer) -> None:
    model = trained_model()
    save(model, tmp_path / "out", SPEC, demo_tokenizer)
    recipe_model = PretrainedVideoLM(str(tmp_path / "out"), trainable=["backbone"], lr=3e-4).eval()
    batch = make_batch(demo_tokenizer, [2], ["A"])
    model.tokenizer = demo_tokenizer
    assert torch.equal(logits(recipe_model, batch), logits(model, batch))
    assert all(p.requires_grad for p in recipe_model.backbone.parameters())
    assert not any(p.requires_grad for p in recipe_model.projector.parameters())
    assert recipe_model.hparams["lr"] == 3e-4


def test_export_from_a_lightning_checkpoint(tmp_path: Path, demo_tokenizer) -> None:
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"
    model = build(parse_recipe(recipe)["model"].as_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "trained": differs from a fresh build
    torch.save({"state_dict": model.state_dict()}, tmp_path / "last.ckpt")
    result = export(str(tmp_path / "last.ckpt"), str(tmp_path / "out"), str(recipe))
    assert result["processor"]["image_size"] == 32
    back = load(tmp_path / "out")
    model.tokenizer = back.tokenizer = demo_tokenizer
    batch = make_batch(demo_tokenizer, [2], ["A"])
    assert torch.equal(logits(back, batch), logits(model.eval(), batch))


def test_bad_directories_fail_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="has no model"):
        load(tmp_path)
    model = trained_model()
    other = dict(SPEC, init_args={**SPEC["init_args"], "compression": []})
    save(model, tmp_path / "out", other)  # weights with TransV keys, a spec without the stages
    with pytest.raises(CheckpointError, match="unexpected"):
        load(tmp_path / "out")
    assert (tmp_path / "out" / WEIGHTS_FILE).is_file()


def test_export_makes_checkpoint_parts_path_free(tmp_path: Path, demo_tokenizer) -> None:
    """A recipe whose tower and backbone read local HF checkpoints exports to a directory that
    needs neither (shape-only specs), with equal logits."""
    import json

    import yaml
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from tests.backbones.test_nemotron_h_helpers import hf_model

    tower_config = SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                      num_attention_heads=4, patch_size=8, image_size=32)  # fmt: skip
    SiglipVisionModel(tower_config).save_pretrained(tmp_path / "siglip")
    pre = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"height": 32, "width": 32}}
    (tmp_path / "siglip" / "preprocessor_config.json").write_text(json.dumps(pre))
    hf_model(vocab_size=512).save_pretrained(tmp_path / "nemotron")
    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml").read_text())
    args = recipe["model"]["init_args"]
    args["encoder"] = {"class_path": "lightning_viper.encoders.SiglipEncoder",
                       "init_args": {"path": str(tmp_path / "siglip"), "feature_layer": -2}}  # fmt: skip
    args["backbone"] = {"class_path": "lightning_viper.backbones.nemotron_h_loading.load_nemotron_h",
                        "init_args": {"path": str(tmp_path / "nemotron")}}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    model = build(parse_recipe(tmp_path / "recipe.yaml")["model"].as_dict())
    torch.save({"state_dict": model.state_dict()}, tmp_path / "last.ckpt")
    export(str(tmp_path / "last.ckpt"), str(tmp_path / "out"), str(tmp_path / "recipe.yaml"))
    spec = yaml.safe_load((tmp_path / "out" / "model.yaml").read_text())["init_args"]
    assert "path" not in spec["encoder"]["init_args"] and "path" not in spec["backbone"]["init_args"]
    assert spec["backbone"]["class_path"].endswith("NemotronHBackbone")
    for name in ("siglip", "nemotron"):  # the directory stands alone
        for f in (tmp_path / name).iterdir():
            f.unlink()
    back = load(tmp_path / "out")
    model.tokenizer = back.tokenizer = demo_tokenizer
    batch = make_batch(demo_tokenizer, [2], ["A"])
    assert torch.equal(logits(back, batch), logits(model.eval(), batch))
