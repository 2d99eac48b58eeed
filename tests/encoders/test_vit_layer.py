"""The fused ViT layer path against transformers' own forward on the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.encoders.clip import ClipEncoder
from lightning_viper.encoders.hf_tower import HFVisionTower
from lightning_viper.encoders.siglip import SiglipEncoder
from lightning_viper.encoders.vit_layer import FP8_MAX, ViTLayers, fp8_weight, quantize_rows

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


def test_quantize_rows_round_trip() -> None:
    x = torch.randn(64, 128) * torch.logspace(-3, 3, 64)[:, None]  # rows of very different scale
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    assert float(q.float().abs().amax()) == pytest.approx(FP8_MAX)  # each row uses the full range
    back = q.float() * scale
    rel = (back - x).abs() / x.abs().amax(dim=-1, keepdim=True)
    assert float(rel.max()) < 2**-4  # e4m3: 3 mantissa bits, half an ulp at the row's top binade
    w8, ws = fp8_weight(torch.randn(48, 128))
    assert w8.shape == (48, 128) and ws.shape == (1, 48)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="fused=True and freeze=True"):
        SiglipEncoder(precision="fp8", freeze=False)
    with pytest.raises(ValueError, match="precision must be"):
        ViTLayers("gelu", compile=False, precision="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported vision-tower activation"):
        ViTLayers("swish", compile=False, precision="bf16")
    enc = SiglipEncoder(precision="fp8")
    with pytest.raises(RuntimeError, match="CUDA device"), torch.no_grad():
        enc(frames(1))


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp8_on_cuda_stays_near_fp32() -> None:
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 GEMMs need compute capability 8.9+")
    x = frames(8, 224).cuda()
    out, ref16, ref32 = _cuda_features({"compile": True, "precision": "fp8"}, x)
    err = _rel(out, ref32)
    assert err < 0.05, f"fp8 features {err:.3f} from fp32 (bf16: {_rel(ref16, ref32):.4f})"
    assert err > _rel(ref16, ref32)  # it really ran in fp8 (coarser than bf16)
