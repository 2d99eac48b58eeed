"""VisionZip: the selection and merge against a naive loop, the encoder's attention against
transformers' own eager attention weights, and the projector on a real SigLIP tower."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from lightning_viper.encoders.clip import ClipEncoder
from lightning_viper.encoders.hf_tower import HFVisionTower
from lightning_viper.encoders.siglip import SiglipEncoder
from lightning_viper.projectors import MLPProjector, VisionZipProjector, visionzip


def naive_visionzip(features: Tensor, received: Tensor, dominant: int, contextual: int) -> Tensor:
    """Per frame, with Python lists: top-k by attention, bin-centre targets, nearest-target means."""
    frames = []
    for x, a in zip(features, received, strict=True):
        p = x.shape[0]
        ranked = sorted(range(p), key=lambda j: (-float(a[j]), j))
        dom = sorted(ranked[:dominant])
        rest = [j for j in range(p) if j not in dom]
        tokens = [x[j] for j in dom]
        if contextual:
            r = len(rest)
            targets = [rest[((2 * i + 1) * r) // (2 * contextual)] for i in range(contextual)]
            groups: dict[int, list[int]] = {t: [t] for t in targets}
            for j in rest:
                if j in groups:
                    continue
                cos = [float(torch.dot(x[j], x[t]) / (x[j].norm() * x[t].norm())) for t in targets]
                groups[targets[cos.index(max(cos))]].append(j)
            tokens += [torch.stack([x[m] for m in groups[t]]).mean(0) for t in targets]
        frames.append(torch.stack(tokens))
    return torch.stack(frames)


@pytest.mark.parametrize(("dominant", "contextual"), [(5, 3), (1, 1), (7, 0), (0, 4), (10, 6)])
def test_matches_naive_loop(dominant: int, contextual: int) -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 16, 8, generator=g, dtype=torch.float64)
    received = torch.rand(3, 16, generator=g)
    received[0, 3] = received[0, 4]  # a tie: the earlier patch wins
    out = visionzip(features, received, dominant, contextual)
    assert out.shape == (3, dominant + contextual, 8)
    torch.testing.assert_close(out, naive_visionzip(features, received, dominant, contextual))


def test_keeping_every_patch_is_the_identity() -> None:
    features, received = torch.randn(2, 9, 4), torch.rand(2, 9)
    assert torch.equal(visionzip(features, received, 9, 0), features)


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and the 9 patches"):
        visionzip(torch.randn(1, 9, 4), torch.rand(1, 9), 8, 2)
    with pytest.raises(ValueError, match="expected"):
        visionzip(torch.randn(1, 9, 4), torch.rand(1, 8), 2, 2)


def tiny(cls: type[HFVisionTower]) -> HFVisionTower:
    torch.manual_seed(0)
    return cls(hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, patch_size=8, image_size=32)


@pytest.mark.parametrize("cls", [SiglipEncoder, ClipEncoder])
def test_attention_received_matches_transformers(cls: type[HFVisionTower]) -> None:
    """The opt-in attention equals transformers' eager attention weights of the feature layer."""
    encoder = tiny(cls)
    frames = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    encoder.keep_attention()
    with torch.no_grad():
        features = encoder(frames)
    received = encoder.take_attention()
    reference = copy.deepcopy(encoder.model)
    reference.set_attn_implementation("eager")
    pixels = encoder.normalise(frames, encoder.mean, encoder.std)
    with torch.no_grad():
        weights = reference(pixel_values=pixels, output_attentions=True).attentions[-1]  # (F, H, T, T)
    prefix = cls.num_prefix_tokens
    queries = weights[:, :, :prefix] if prefix else weights
    expected = queries.mean(dim=(1, 2))[:, prefix:]
    assert received.shape == (3, encoder.num_patches) == features.shape[:2]
    torch.testing.assert_close(received, expected, rtol=1e-5, atol=1e-6)
    assert float(received.std()) > 0  # not uniform: the ranking means something


def test_attention_is_off_by_default() -> None:
    encoder = tiny(SiglipEncoder)
    encoder(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="keep_attention"):
        encoder.take_attention()


def test_projector_on_a_real_tower_loads_mlp_weights() -> None:
    encoder = tiny(SiglipEncoder)
    zip_proj = VisionZipProjector(dominant=5, contextual=2)
    zip_proj.bind(encoder.embed_dim, 24)
    zip_proj.attach_encoder(encoder)
    mlp = MLPProjector()
    mlp.bind(encoder.embed_dim, 24)
    zip_proj.load_state_dict(mlp.state_dict())  # same weight names: an MLP/ToMe checkpoint loads
    frames = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        features = encoder(frames)
        out = zip_proj(features)
        received = encoder.take_attention() if encoder._attention else None
    assert received is None  # the projector consumed what the encoder recorded
    assert out.shape == (4, 7, 24) and zip_proj.tokens_per_frame(encoder.num_patches) == 7
    encoder.keep_attention()
    with torch.no_grad():
        expected = mlp(naive_visionzip(encoder(frames), encoder.take_attention(), 5, 2))
    torch.testing.assert_close(out, expected)
    assert zip_proj.describe() == "VisionZip(dominant=5, contextual=2)"


def test_projector_needs_an_attention_encoder() -> None:
    class NoAttention:
        pass

    with pytest.raises(ValueError, match="records its attention"):
        VisionZipProjector(2, 1).attach_encoder(NoAttention())  # type: ignore[arg-type]
