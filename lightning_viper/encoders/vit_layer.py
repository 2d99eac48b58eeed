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
layer. (A float8 variant of the four GEMMs was measured on an H200 and removed: slower than
compiled bf16 and 6-8% off in its features; docs/benchmarks.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def _linear(x: Tensor, p: dict[str, Tensor], name: str, act: str | None = None) -> Tensor:
    """(M, K) @ W^T + b, then ``act``, with bias (and tanh-GELU) in cuBLAS epilogues."""
    w, b = p[f"{name}_w"], p[f"{name}_b"]
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
    """Runs a tower's encoder layers through :func:`vit_layer`, optionally compiled.

    Holds no parameters: it reads the transformers layers it is given on every call, so state
    dicts, loading, freezing and gradients stay the tower's."""

    def __init__(self, hidden_act: str, compile: bool) -> None:
        _activation(torch.zeros(1), hidden_act)  # unsupported activations fail at construction
        self.hidden_act = hidden_act
        self.fn = torch.compile(vit_layer, dynamic=False) if compile else vit_layer

    def __call__(
        self, x: Tensor, layers: nn.ModuleList, keep_input_of_last: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """(f, T, D) embeddings -> (f, T, D) output of the last layer, and (when asked) its input."""
        stack = list(layers)
        last_input: Tensor | None = None
        for i, layer in enumerate(stack):
            if keep_input_of_last and i == len(stack) - 1:
                last_input = x
            x = self.fn(x, layer_weights(layer), layer_spec(layer, self.hidden_act))
        return x, last_input
