"""ops.linear: the residual add and the ReLU folded into the GEMM, against the plain modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_viper.ops.linear import add_linear, relu_linear


@pytest.mark.parametrize("bias", [True, False])
def test_add_linear_is_residual_plus_linear(bias: bool) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 5, bias=bias)
    residual, x = torch.randn(9, 5), torch.randn(9, 6)
    with torch.no_grad():
        want = residual + lin(x)
        torch.testing.assert_close(add_linear(residual, x, lin), want)
        out = torch.full((9, 5), float("nan"))
        assert add_linear(residual, x, lin, out=out) is out
        torch.testing.assert_close(out, want)
        in_place = residual.clone()
        add_linear(in_place, x, lin, out=in_place)  # the residual's own buffer
        torch.testing.assert_close(in_place, want)


@pytest.mark.parametrize("bias", [True, False])
def test_relu_linear_is_relu_of_linear(bias: bool) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 5, bias=bias)
    x = torch.randn(9, 6)
    got = relu_linear(x, lin)
    torch.testing.assert_close(got, torch.relu(lin(x)))
    assert (got >= 0).all() and (got == 0).any()


def test_bad_shapes_and_dtypes_are_named() -> None:
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="rows, features"):
        relu_linear(torch.randn(2, 5, 4), lin)
    with pytest.raises(ValueError, match="rows, features"):
        add_linear(torch.randn(2, 5, 3), torch.randn(2, 5, 4), lin)
    with pytest.raises(ValueError, match="one dtype"):
        add_linear(torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4), lin)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bias", [True, False])
def test_gpu_bf16_epilogues_match_float32(bias: bool) -> None:
    """cuBLASLt's ReLU epilogue (a zero bias when the layer has none) and beta = 1 residual add in
    bfloat16, against float32 on the CPU; bfloat16's rounding is the tolerance."""
    torch.manual_seed(0)
    lin = nn.Linear(256, 512, bias=bias)
    x, residual = torch.randn(300, 256), torch.randn(300, 512)
    with torch.no_grad():
        want_relu, want_add = torch.relu(lin(x)), residual + lin(x)
        dev_lin = nn.Linear(256, 512, bias=bias).to("cuda", torch.bfloat16)
        dev_lin.load_state_dict(lin.state_dict())
        xb, rb = x.to("cuda", torch.bfloat16), residual.to("cuda", torch.bfloat16)
        torch.testing.assert_close(relu_linear(xb, dev_lin).float().cpu(), want_relu, atol=5e-2, rtol=2e-2)
        torch.testing.assert_close(add_linear(rb, xb, dev_lin).float().cpu(), want_add, atol=5e-2, rtol=2e-2)
