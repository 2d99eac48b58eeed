"""The fused ViT layer path against transformers' own forward on the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.encoders.clip import ClipEncoder
from lightning_viper.encoders.hf_tower import HFVisionTower
from lightning_viper.encoders.siglip import SiglipEncoder
from lightning_viper.encoders.vit_layer import ViTLayers

SHAPE = dict(hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64, patch_size=8, image_size=32)
CASES = [(SiglipEncoder, None), (SiglipEncoder, "gelu"), (ClipEncoder, None)]  # tanh GELU, exact GELU, quick GELU


def frames(n: int, size: int = 32) -> Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def build(cls: type[HFVisionTower], act: str | None, **kw: object) -> HFVisionTower:
    torch.manual_seed(0)
    return cls(hidden_act=act, feature_layer=-1, **SHAPE, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cls", "act"), CASES)
def test_fused_features_equal_transformers_forward(cls: type[HFVisionTower], act: str | None) -> None:
    enc = build(cls, act)
    x = frames(3)
    with torch.no_grad():
        fused = enc(x)
        with enc.transformers_forward():
            ref = enc(x)
    assert fused.shape == ref.shape == (3, 16, 32)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fused, torch.zeros_like(fused))


@pytest.mark.parametrize(("cls", "act"), CASES)
def test_fused_gradients_equal_transformers_gradients(cls: type[HFVisionTower], act: str | None) -> None:
    """A trained tower: the fused QKV concatenation still sends gradients to q, k and v."""
    enc = build(cls, act, freeze=False)
    x = frames(2)
    enc(x).square().mean().backward()
    fused = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad(set_to_none=True)
    with enc.transformers_forward():
        enc(x).square().mean().backward()
    ref = {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}
    assert fused.keys() == ref.keys() and any("q_proj" in n for n in ref)
    for name, grad in ref.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_unfused_path_still_available_and_state_dict_unchanged() -> None:
    a, b = build(SiglipEncoder, None), build(SiglipEncoder, None, fused=False)
    assert a.state_dict().keys() == b.state_dict().keys()
    x = frames(2)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_unsupported_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported vision-tower activation"):
        ViTLayers("swish", compile=False)


def _cuda_features(options: dict[str, object], x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(features of ``options`` in bf16, transformers' bf16 forward, transformers' fp32 forward) on CUDA."""
    torch.manual_seed(0)
    shape = dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, patch_size=14, image_size=224)
    enc = SiglipEncoder(feature_layer=-1, dtype="bfloat16", **shape, **options).cuda()  # type: ignore[arg-type]
    with torch.no_grad():
        out = enc(x).float()
        with enc.transformers_forward():
            ref16 = enc(x).float()
            ref32 = enc.float()(x)
    return out, ref16, ref32


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_bf16_on_cuda_is_as_close_as_transformers_bf16(compile: bool) -> None:
    x = frames(8, 224).cuda()
    out, ref16, ref32 = _cuda_features({"compile": compile}, x)
    assert _rel(out, ref32) < 2 * _rel(ref16, ref32) + 1e-3  # tanh-GELU epilogue, fused QKV: bf16-level error
