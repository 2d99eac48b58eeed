"""``viper convert timeviper`` on a tiny model in the reference layout (timm SigLIP ViT, transformers
NemotronH weights and TransV weights under the reference's prefixes): the converted VideoLM
against independent forwards of the same weights (timm's ViT, transformers' NemotronHForCausalLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.cli.main import parse_recipe
from lightning_viper.compression import TransV
from lightning_viper.convert import convert_timeviper
from lightning_viper.export import load
from tests.backbones.test_nemotron_h_helpers import hf_model, packed_state

PDROP = "uni_1_0.5-attn_6_0.25"  # TINY pattern M-M*-M*: attention at layers 3 and 6
ALPHA = [0.3, -0.6]


def tiny_siglip() -> nn.Module:
    """timm's ViT with SigLIP settings (no class token, MAP pooling head, tanh GELU) at tiny width."""
    torch.manual_seed(1)
    vit = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2,
                                        mlp_ratio=2.0, class_token=False, global_pool="map",
                                        act_layer="gelu_tanh", num_classes=0)  # fmt: skip
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return vit.eval()


def reference_checkpoint(root: Path, pdrop: str = PDROP, extra: dict[str, Tensor] | None = None) -> dict[str, object]:
    """Write SRC (state dict + nano config) the way the reference lays it out; returns its parts."""
    vit, llm = tiny_siglip(), hf_model(vocab_size=512)
    projector = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64))
    state = {f"vision_backbone.featurizer.{k}": v for k, v in vit.state_dict().items()}
    state |= {f"projector.projector.{k}": v for k, v in projector.state_dict().items()}
    for key, value in llm.state_dict().items():
        key = "backbone." + key.removeprefix("model.") if key.startswith("model.") else key  # transformers 5
        state["llm_backbone.llm." + key] = value
    merge = {}
    for stage in range(2):
        for name, shape in (("q_proj", (64, 64)), ("k_proj", (32, 64)), ("v_proj", (32, 64)), ("o_proj", (64, 64))):
            merge[f"llm_backbone.llm.backbone.merge_modules.{stage}.{name}.weight"] = 0.1 * torch.randn(shape)
    state |= merge | {"llm_backbone.llm.backbone.alpha": torch.tensor(ALPHA)} | (extra or {})
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "timeviper.safetensors"))
    llm.config.save_pretrained(str(root / "hf"))
    config = json.loads((root / "hf" / "config.json").read_text())
    config |= {"model_type": "nano", "merge_module": "CrossAttention", "use_pdrop": True, "pdrop_type": pdrop}
    (root / "config.json").write_text(json.dumps(config))
    return {"vit": vit, "llm": llm, "projector": projector, "state": state, "merge": merge}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, demo_tokenizer_dir: Path) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("tv")
    parts = reference_checkpoint(tmp / "src")
    report = convert_timeviper(str(tmp / "src"), str(tmp / "dst"), tokenizer=str(demo_tokenizer_dir),
                               vision_heads=2, tokens_per_frame=4, tome_heads=2, max_frames=8)  # fmt: skip
    return parts | {"report": report, "dst": tmp / "dst", "src": tmp / "src"}


def test_every_source_key_is_mapped_or_dropped_with_a_reason(converted: dict) -> None:
    full = json.loads((converted["dst"] / "conversion_report.json").read_text())
    dropped = full["dropped"]
    source = set(converted["state"])
    assert full["mapped"] + len(dropped) == len(source)
    assert {k for k in source if ".attn_pool." in k} <= set(dropped)
    assert "vision_backbone.featurizer.norm.weight" in dropped
    assert any(".blocks.2." in k for k in dropped)  # after the feature block (1 = depth - 2)
    assert all(isinstance(why, str) and why for why in dropped.values())


@torch.no_grad()
def test_vision_features_equal_timm(converted: dict) -> None:
    model = load(converted["dst"])
    frames = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    pixels = (frames.float() / 255.0 - 0.5) / 0.5
    (expected,) = converted["vit"].get_intermediate_layers(pixels, n={1})  # block 1 of 3, no final norm
    torch.testing.assert_close(model.encoder(frames), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_llm_logits_equal_transformers(converted: dict) -> None:
    model = load(converted["dst"])
    ids = torch.randint(0, 512, (1, 11))
    state = packed_state([[11]])
    out = model.backbone(model.backbone.embed(ids), state)
    expected = converted["llm"](ids).logits
    torch.testing.assert_close(model.backbone.logits(out.hidden), expected, rtol=1e-4, atol=1e-4)
    assert model.backbone.layers[0].mixer.time_step_limit == (0.0, float("inf"))  # the reference's clamp


@torch.no_grad()
def test_projector_and_transv_weights(converted: dict) -> None:
    model = load(converted["dst"])
    x = torch.randn(5, 32)
    torch.testing.assert_close(model.projector.mlp(x), converted["projector"](x))
    assert model.projector.rule == "reference" and model.projector.num_tokens == 4
    stages = model.stages()
    assert [type(s) for s in stages] == [TransV, TransV]
    assert [(s.layer, s.keep, s.selector, s.rule) for s in stages] == [
        (1, 0.5, "uniform", "reference"),
        (6, 0.25, "attention", "reference"),
    ]
    for i, stage in enumerate(stages):
        assert float(stage.alpha) == pytest.approx(ALPHA[i])
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            ref = converted["merge"][f"llm_backbone.llm.backbone.merge_modules.{i}.{name}.weight"]
            assert torch.equal(getattr(stage, name).weight, ref)


def test_recipe_parses_and_names_the_model(converted: dict) -> None:
    config = parse_recipe(converted["dst"] / "recipe.yaml")
    assert config["model"]["class_path"] == "lightning_viper.export.PretrainedVideoLM"
    assert config["data"]["init_args"]["image_size"] == 32
    assert Path(config["model"]["init_args"]["path"]) == converted["dst"].resolve()


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    reference_checkpoint(tmp_path / "src", extra={"vision_backbone.featurizer.cls_token": torch.zeros(1, 1, 32)})
    with pytest.raises(CheckpointError, match="cls_token"):
        convert_timeviper(
            str(tmp_path / "src"), str(tmp_path / "dst"), vision_heads=2, tokens_per_frame=4, tome_heads=2
        )


def test_growing_pdrop_ratio_is_refused(tmp_path: Path) -> None:
    reference_checkpoint(tmp_path / "src", pdrop="uni_1_0.5-attn_6_0.9")
    with pytest.raises(CheckpointError, match="must not grow"):
        convert_timeviper(
            str(tmp_path / "src"), str(tmp_path / "dst"), vision_heads=2, tokens_per_frame=4, tome_heads=2
        )


def test_viper_convert_verb(converted: dict, tmp_path: Path) -> None:
    from lightning_viper.cli.viper import main

    args = ["--vision_heads", "2", "--tokens_per_frame", "4", "--tome_heads", "2"]
    main(["convert", "timeviper", str(converted["src"]), str(tmp_path / "dst"), *args])
    assert (tmp_path / "dst" / "recipe.yaml").is_file()
    assert load(tmp_path / "dst").strategy_name() == load(converted["dst"]).strategy_name()
