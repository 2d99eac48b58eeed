"""``viper convert timeviper`` on a tiny model in the reference layout (a timm SigLIP ViT state dict,
transformers NemotronH weights and TransV weights under the reference's prefixes): the converted
VideoLM against independent forwards of the same weights (a naive ViT written here,
transformers' NemotronHForCausalLM, and, where timm is installed, timm's own ViT).

The vision weights are built by hand with the names and shapes of timm's ``VisionTransformer`` at
SigLIP settings (``class_token=False, global_pool="map"``), so these tests do not need timm (which
pulls torchvision, and with it a CUDA torch, into a CPU environment)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
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
# The tiny SigLIP: 32 px frames, 8 px patches (16 patches), width 32, 3 blocks, 2 heads, MLP 64.
IMAGE, PATCH, WIDTH, DEPTH, HEADS, MLP = 32, 8, 32, 3, 2, 64
FEATURE_BLOCK = DEPTH - 2  # the converter's default feature_layer=-2
LN_EPS = 1e-6  # timm's LayerNorm default, HF SigLIP's layer_norm_eps


def siglip_state(seed: int = 1) -> dict[str, Tensor]:
    """Random weights in the layout of timm's ``VisionTransformer(class_token=False,
    global_pool="map", num_classes=0)``: patch conv, pos_embed (1, N, D), pre-norm blocks with a
    fused qkv, the final ``norm`` and the MAP head ``attn_pool`` (latent query, q, kv, proj, norm, MLP)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float) -> Tensor:
        return scale * torch.randn(*shape, generator=gen)

    def linear(name: str, out: int, inp: int) -> dict[str, Tensor]:
        return {f"{name}.weight": rand(out, inp, scale=inp**-0.5), f"{name}.bias": rand(out, scale=0.1)}

    def norm(name: str) -> dict[str, Tensor]:
        return {f"{name}.weight": 1.0 + rand(WIDTH, scale=0.3), f"{name}.bias": rand(WIDTH, scale=0.3)}

    patches = (IMAGE // PATCH) ** 2
    state = {
        "patch_embed.proj.weight": rand(WIDTH, 3, PATCH, PATCH, scale=(3 * PATCH * PATCH) ** -0.5),
        "patch_embed.proj.bias": rand(WIDTH, scale=0.1),
        "pos_embed": rand(1, patches, WIDTH, scale=0.5),
    }
    for i in range(DEPTH):
        block = f"blocks.{i}"
        state |= norm(f"{block}.norm1") | linear(f"{block}.attn.qkv", 3 * WIDTH, WIDTH)
        state |= linear(f"{block}.attn.proj", WIDTH, WIDTH) | norm(f"{block}.norm2")
        state |= linear(f"{block}.mlp.fc1", MLP, WIDTH) | linear(f"{block}.mlp.fc2", WIDTH, MLP)
    state |= norm("norm") | {"attn_pool.latent": rand(1, 1, WIDTH, scale=WIDTH**-0.5)}
    state |= linear("attn_pool.q", WIDTH, WIDTH) | linear("attn_pool.kv", 2 * WIDTH, WIDTH)
    state |= linear("attn_pool.proj", WIDTH, WIDTH) | norm("attn_pool.norm")
    state |= linear("attn_pool.mlp.fc1", MLP, WIDTH) | linear("attn_pool.mlp.fc2", WIDTH, MLP)
    return state


def naive_vit_features(w: dict[str, Tensor], pixels: Tensor, feature_block: int) -> Tensor:
    """(F, 3, H, W) pixels -> (F, N, D): the output of block ``feature_block``, no final norm,
    written out from the equations (pre-norm ViT, exact erf GELU: timm's so400m/14 SigLIP configs,
    which TimeViper loads, set no ``act_layer``, so timm's default ``nn.GELU`` runs, not the tanh
    approximation of HF SigLIP's ``gelu_pytorch_tanh``)."""

    def layer_norm(x: Tensor, name: str) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + LN_EPS) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x: Tensor, name: str) -> Tensor:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def gelu(x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    x = F.conv2d(pixels, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=PATCH)  # (F, D, h, w)
    x = x.flatten(2).transpose(1, 2) + w["pos_embed"]  # (F, N, D), patches row-major
    frames, patches, width = x.shape
    head_dim = width // HEADS
    for i in range(feature_block + 1):
        block = f"blocks.{i}"
        qkv = linear(layer_norm(x, f"{block}.norm1"), f"{block}.attn.qkv")  # (F, N, 3D): q | k | v
        q, k, v = (t.reshape(frames, patches, HEADS, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)  # (F, H, N, N)
        mixed = (attn @ v).transpose(1, 2).reshape(frames, patches, width)
        x = x + linear(mixed, f"{block}.attn.proj")
        hidden = gelu(linear(layer_norm(x, f"{block}.norm2"), f"{block}.mlp.fc1"))
        x = x + linear(hidden, f"{block}.mlp.fc2")
    return x


def reference_checkpoint(root: Path, pdrop: str = PDROP, extra: dict[str, Tensor] | None = None) -> dict[str, object]:
    """Write SRC (state dict + nano config) the way the reference lays it out; returns its parts."""
    vision = siglip_state()
    torch.manual_seed(1)
    llm = hf_model(vocab_size=512)
    projector = nn.Sequential(nn.Linear(WIDTH, 64), nn.GELU(), nn.Linear(64, 64))
    state = {f"vision_backbone.featurizer.{k}": v for k, v in vision.items()}
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
    return {"vision": vision, "llm": llm, "projector": projector, "state": state, "merge": merge}


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


def frames_and_pixels() -> tuple[Tensor, Tensor]:
    """3 random uint8 frames and the pixels SigLIP sees ((x / 255 - 0.5) / 0.5)."""
    frames = torch.randint(0, 256, (3, 3, IMAGE, IMAGE), dtype=torch.uint8)
    return frames, (frames.float() / 255.0 - 0.5) / 0.5


@torch.no_grad()
def test_vision_features_equal_a_naive_vit(converted: dict) -> None:
    model = load(converted["dst"])
    frames, pixels = frames_and_pixels()
    expected = naive_vit_features(converted["vision"], pixels, FEATURE_BLOCK)  # block 1 of 3, no final norm
    torch.testing.assert_close(model.encoder(frames), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_vision_features_equal_timm(converted: dict) -> None:
    """The hand-built layout loads strictly into timm's SigLIP ViT and its forward agrees.

    Skipped without timm (CI's ``make test``). To run it: ``pip install -e ".[convert]"`` (timm
    pulls torchvision, which on a CPU-wheel torch installs the matching PyPI torch)."""
    timm = pytest.importorskip("timm")
    vit = timm.models.VisionTransformer(
        img_size=IMAGE,
        patch_size=PATCH,
        embed_dim=WIDTH,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=MLP / WIDTH,
        class_token=False,
        global_pool="map",
        num_classes=0,
    )  # fmt: skip (timm's so400m/14: default GELU)
    vit.load_state_dict(converted["vision"], strict=True)  # same names and shapes as timm's
    model = load(converted["dst"])
    frames, pixels = frames_and_pixels()
    (expected,) = vit.eval().get_intermediate_layers(pixels, n={FEATURE_BLOCK})  # no final norm
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
    reference_checkpoint(tmp_path / "src", extra={"vision_backbone.featurizer.cls_token": torch.zeros(1, 1, WIDTH)})
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
