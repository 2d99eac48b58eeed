"""One pre-norm ViT encoder layer (the SigLIP / CLIP layout) in as few large kernels as possible.

transformers' layer runs q, k and v as three GEMMs, hands SDPA transposed views, copies the
attention output back into place and applies bias, activation and residual adds as separate
passes. On an H200 that memory-bound work costs more than the GEMMs of SigLIP so400m
(docs/benchmarks.md). Here the same weights run as

    x (f, T, D) -> LN1 -> one QKV GEMM (bias in the epilogue) -> SDPA on strided views
      -> out GEMM + residual -> LN2 -> fc1 GEMM with bias + GELU(tanh) in the epilogue
      -> fc2 GEMM + residual

The weights stay the transformers modules' own parameters (names, loading and gradients are
unchanged). :func:`vit_layer` takes only tensors, so one ``torch.compile`` graph serves every
layer. ``precision="fp8"`` runs the four GEMMs of a frozen tower in float8 e4m3 with per-row
activation and per-output-channel weight scales (Hopper and newer; opt-in, error stated in
docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Precision = Literal["bf16", "fp8"]
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8 e4m3fn value

# transformers' activation names -> whether cuBLASLt's GELU epilogue (tanh approximation) is exact
_TANH_GELU = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast"}


@dataclass(frozen=True)
class LayerSpec:
    """What :func:`vit_layer` needs besides tensors: heads, norm eps and the MLP activation."""

    heads: int
    eps: float
    act: str  # transformers' hidden_act name: gelu_pytorch_tanh, gelu, quick_gelu


def layer_weights(layer: Any) -> dict[str, Tensor]:
    """The tensors of a transformers SigLIP/CLIP encoder layer, q/k/v fused into one (3D, D) matrix.

    The concatenation is a fresh tensor each call (8 MB for so400m), so gradients reach the three
    original projections when the tower is trained."""
    attn, mlp = layer.self_attn, layer.mlp
    return {
        "ln1_w": layer.layer_norm1.weight,
        "ln1_b": layer.layer_norm1.bias,
        "qkv_w": torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),  # (3D, D)
        "qkv_b": torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),  # (3D,)
        "out_w": attn.out_proj.weight,
        "out_b": attn.out_proj.bias,
        "ln2_w": layer.layer_norm2.weight,
        "ln2_b": layer.layer_norm2.bias,
        "fc1_w": mlp.fc1.weight,
        "fc1_b": mlp.fc1.bias,
        "fc2_w": mlp.fc2.weight,
        "fc2_b": mlp.fc2.bias,
    }


def layer_spec(layer: Any, hidden_act: str) -> LayerSpec:
    """The :class:`LayerSpec` of a transformers SigLIP/CLIP encoder layer."""
    return LayerSpec(heads=int(layer.self_attn.num_heads), eps=float(layer.layer_norm1.eps), act=hidden_act)


def _activation(x: Tensor, act: str) -> Tensor:
    if act in _TANH_GELU:
        return F.gelu(x, approximate="tanh")
    if act == "gelu":
        return F.gelu(x)
    if act == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"unsupported vision-tower activation {act!r} (gelu_pytorch_tanh, gelu or quick_gelu)")


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """(M, K) -> float8 e4m3 (M, K) and fp32 scales (M, 1) with x ~ q * scale, per row."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)  # (M, 1)
    scale = amax / FP8_MAX
    return (x.float() / scale).to(FP8), scale


def fp8_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(N, K) weight -> float8 (N, K) and fp32 scales (1, N), one per output channel."""
    q, scale = quantize_rows(weight.detach())
    return q, scale.t().contiguous()


def _linear(x: Tensor, p: dict[str, Tensor], name: str, act: str | None = None) -> Tensor:
    """(M, K) @ W^T + b, then ``act``: bf16/fp32 through cuBLAS epilogues, fp8 via ``_scaled_mm``."""
    w, b = p[f"{name}_w"], p[f"{name}_b"]
    if f"{name}_w8" in p:  # fp8: W^T must be column-major, which the (N, K) row-major weight's .t() is
        q, scale = quantize_rows(x)
        y = torch._scaled_mm(q, p[f"{name}_w8"].t(), scale_a=scale, scale_b=p[f"{name}_s8"], bias=b, out_dtype=x.dtype)
        return y if act is None else _activation(y, act)
    if act in _TANH_GELU and x.is_cuda:  # GEMM + bias + GELU(tanh) in one cuBLASLt call
        return torch._addmm_activation(b, x, w.t(), use_gelu=True)
    y = F.linear(x, w, b)
    return y if act is None else _activation(y, act)


def vit_layer(x: Tensor, p: dict[str, Tensor], spec: LayerSpec) -> Tensor:
    """One pre-norm encoder layer: (f, T, D) -> (f, T, D), same maths as transformers' layer."""
    f, t, d = x.shape
    hd = d // spec.heads
    h = F.layer_norm(x, (d,), p["ln1_w"], p["ln1_b"], spec.eps).view(f * t, d)
    qkv = _linear(h, p, "qkv").view(f, t, 3, spec.heads, hd)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (f, H, T, hd), strided views
    o = F.scaled_dot_product_attention(q, k, v, scale=hd**-0.5)  # (f, H, T, hd)
    o = o.transpose(1, 2).reshape(f * t, d)
    x = x + _linear(o, p, "out").view(f, t, d)
    h = F.layer_norm(x, (d,), p["ln2_w"], p["ln2_b"], spec.eps).view(f * t, d)
    h = _linear(h, p, "fc1", act=spec.act)  # (f * T, I)
    return x + _linear(h, p, "fc2").view(f, t, d)


class ViTLayers:
    """Runs a tower's encoder layers through :func:`vit_layer` (optionally compiled, optionally fp8).

    Holds no parameters: it reads the transformers layers it is given on every call, so state
    dicts, loading, freezing and gradients stay the tower's. fp8 weights are quantised once per
    device on first use (frozen towers only: they would go stale if the weights trained)."""

    def __init__(self, hidden_act: str, compile: bool, precision: Precision) -> None:
        if precision not in ("bf16", "fp8"):
            raise ValueError(f"precision must be 'bf16' or 'fp8', got {precision!r}")
        _activation(torch.zeros(1), hidden_act)  # unsupported activations fail at construction
        self.hidden_act = hidden_act
        self.precision = precision
        self.fn = torch.compile(vit_layer, dynamic=False) if compile else vit_layer
        self._fp8: list[dict[str, Tensor]] = []

    def _fp8_weights(self, layers: list[Any], device: torch.device) -> list[dict[str, Tensor]]:
        if len(self._fp8) != len(layers) or self._fp8[0]["qkv_w8"].device != device:
            self._fp8 = []
            for layer in layers:
                weights, entry = layer_weights(layer), {}
                for name in ("qkv", "out", "fc1", "fc2"):
                    entry[f"{name}_w8"], entry[f"{name}_s8"] = fp8_weight(weights[f"{name}_w"])
                self._fp8.append(entry)
        return self._fp8

    def __call__(
        self, x: Tensor, layers: nn.ModuleList, keep_input_of_last: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """(f, T, D) embeddings -> (f, T, D) output of the last layer, and (when asked) its input."""
        stack = list(layers)
        extra: list[dict[str, Tensor]] = []
        if self.precision == "fp8":
            if torch.is_grad_enabled() or not x.is_cuda:
                raise RuntimeError("precision='fp8' is for a frozen vision tower on a CUDA device (no autograd)")
            extra = self._fp8_weights(stack, x.device)
        last_input: Tensor | None = None
        for i, layer in enumerate(stack):
            if keep_input_of_last and i == len(stack) - 1:
                last_input = x
            p = layer_weights(layer)
            if extra:
                p.update(extra[i])
            x = self.fn(x, p, layer_spec(layer, self.hidden_act))
        return x, last_input
