"""SigLIP and CLIP encoders against the transformers towers they wrap (tiny configs, 32 px)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.encoders.clip import CLIP_MEAN, CLIP_STD, ClipEncoder
from lightning_viper.encoders.hf_tower import HFVisionTower
from lightning_viper.encoders.siglip import SiglipEncoder, siglip_so400m

FAMILIES = [(SiglipEncoder, [0.5] * 3, [0.5] * 3, 0), (ClipEncoder, CLIP_MEAN, CLIP_STD, 1)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def frames(n: int, size: int = 32) -> Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def full_tower(cls: type[HFVisionTower]) -> torch.nn.Module:
    """A complete transformers tower (all 3 layers, final norm) with the tiny test shape."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    shape = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, patch_size=8, image_size=32
    )
    if cls is SiglipEncoder:
        return SiglipVisionModel(SiglipVisionConfig(**shape)).eval()
    return CLIPVisionModel(CLIPVisionConfig(**shape)).eval()


def reference(
    tower: torch.nn.Module, x: Tensor, mean: list[float], std: list[float], prefix: int, layer: int
) -> Tensor:
    """Normalise by hand and take hidden_states of layer ``layer`` (-2: second-to-last) of the full tower."""
    pixels = (x.float() / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
    return hidden[len(hidden) + layer][:, prefix:]  # hidden = (embeddings, layer 1, ..., layer L)


@pytest.mark.parametrize(("cls", "mean", "std", "prefix"), FAMILIES)
def test_shapes_and_features_match_the_tower(
    cls: type[HFVisionTower], mean: list, std: list, prefix: int, tmp_path: Path
) -> None:
    tower = full_tower(cls)
    tower.save_pretrained(tmp_path)
    x = frames(5)
    for layer in (-2, -1):
        enc = cls(path=str(tmp_path), feature_layer=layer)
        out = enc(x)
        assert (enc.embed_dim, enc.num_patches, enc.image_size) == (32, 16, 32)
        assert out.shape == (5, 16, 32)
        torch.testing.assert_close(out, reference(tower, x, mean, std, prefix, layer))


def test_layers_after_the_feature_layer_are_dropped() -> None:
    enc = SiglipEncoder(num_layers=3, feature_layer=-2, freeze=False)
    assert len(getattr(enc.model, "vision_model", enc.model).encoder.layers) == 2
    enc(frames(2)).square().mean().backward()
    assert all(p.grad is not None for p in enc.parameters()), "every kept parameter is used (DDP needs it)"


@pytest.mark.parametrize("cls", [SiglipEncoder, ClipEncoder])
def test_frozen_by_default_gets_no_grad(cls: type[HFVisionTower]) -> None:
    enc = cls()
    enc.train()
    assert not enc.model.training  # frozen towers stay in eval mode
    assert not any(p.requires_grad for p in enc.parameters())
    out = enc(frames(2))
    assert not out.requires_grad
    trainable = cls(freeze=False)
    trainable(frames(2)).square().mean().backward()
    grads = [p.grad for p in trainable.model.encoder.layers[0].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("cls", [SiglipEncoder, ClipEncoder])
def test_micro_batching_equals_one_big_batch(cls: type[HFVisionTower]) -> None:
    big = cls(micro_batch=64)
    small = cls(micro_batch=2)
    small.load_state_dict(big.state_dict())
    x = frames(5)
    torch.testing.assert_close(small(x), big(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("cls", "mean", "std", "prefix"), FAMILIES)
def test_load_from_save_pretrained_dir_equals_in_memory(
    cls: type[HFVisionTower], mean: list, std: list, prefix: int, tmp_path: Path
) -> None:
    tower = full_tower(cls)
    tower.save_pretrained(tmp_path)
    custom_mean, custom_std = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
    pre = {"image_mean": custom_mean, "image_std": custom_std, "size": {"height": 32, "width": 32}}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    loaded = cls(path=str(tmp_path))
    assert (loaded.embed_dim, loaded.num_patches, loaded.image_size) == (32, 16, 32)
    assert not any(p.requires_grad for p in loaded.parameters())
    x = frames(3)
    torch.testing.assert_close(loaded(x), reference(tower, x, custom_mean, custom_std, prefix, -2))


def test_load_without_preprocessor_uses_family_defaults(tmp_path: Path) -> None:
    enc = SiglipEncoder()
    enc.model.save_pretrained(tmp_path)
    loaded = SiglipEncoder(path=str(tmp_path))
    x = frames(2)
    torch.testing.assert_close(loaded(x), enc(x))


@pytest.mark.parametrize("cls", [SiglipEncoder, ClipEncoder])
def test_missing_path_names_it(cls: type[HFVisionTower], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no_such_encoder"):
        cls(path=str(tmp_path / "no_such_encoder"))


def test_wrong_frame_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="image_size to 32"):
        SiglipEncoder()(frames(1, size=48))


def test_bad_feature_layer_is_rejected() -> None:
    with pytest.raises(ValueError, match="feature_layer"):
        SiglipEncoder(num_layers=2, feature_layer=-3)


def test_so400m_preset_shape() -> None:
    with torch.device("meta"):
        enc = siglip_so400m()
    assert (enc.embed_dim, enc.num_patches, enc.image_size) == (1152, 729, 384)
    assert enc.num_layers == 27
    assert len(enc.model.encoder.layers) == 26  # features come from the second-to-last layer
    assert 390e6 < sum(p.numel() for p in enc.parameters()) < 420e6
