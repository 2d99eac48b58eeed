"""The hybrid's MLP block without autograd: the residual inside the down GEMM equals x + mlp(norm(x))."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.backbones.nemotron_layers import HybridBlock, SquaredReLUMLP
from lightning_viper.ops import pieces


def _block() -> HybridBlock:
    torch.manual_seed(0)
    return HybridBlock("mlp", SquaredReLUMLP(8, 24), hidden_size=8, eps=1e-5).eval()


@pytest.mark.parametrize("rows_per_piece", [5, 16_384])
def test_mlp_block_without_autograd_adds_the_residual_in_the_gemm(
    monkeypatch: pytest.MonkeyPatch, rows_per_piece: int
) -> None:
    block = _block()
    monkeypatch.setattr(pieces, "ROWS_PER_PIECE", rows_per_piece)
    hidden = torch.randn(3, 7, 8)
    mask = torch.ones(3, 7, dtype=torch.bool)
    segment = torch.zeros(3, 7, dtype=torch.long)
    want = hidden + torch.relu(block.mixer.up_proj(block.norm(hidden))).square() @ block.mixer.down_proj.weight.t()
    calls: list[int] = []
    forward = block.mixer.forward

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(block.mixer, "forward", counted)
    with torch.no_grad():
        got = block(hidden, mask, segment, None)
    assert not calls  # the fused path, not residual + mixer(...)
    torch.testing.assert_close(got, want.detach())
    assert got.data_ptr() != hidden.data_ptr()  # the caller's tensor is not written
    # with autograd on, the plain path runs and gradients reach the weights
    block(hidden, mask, segment, None).sum().backward()
    assert calls and block.mixer.down_proj.weight.grad is not None


def test_add_to_refuses_autograd() -> None:
    block = _block()
    x = torch.randn(2, 3, 8)
    with pytest.raises(RuntimeError, match="without autograd"):
        block.mixer.add_to(x, x)


def test_mlp_block_under_autocast_keeps_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16-mixed evaluation: the fused calls would bypass autocast's casts (float32 GEMMs), so the
    block runs residual + mlp(norm(x)) under autocast's dtypes."""
    block = _block()
    hidden = torch.randn(2, 5, 8)
    mask, segment = torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.long)
    monkeypatch.setattr(block.mixer, "add_to", None)  # calling it would fail
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = block(hidden, mask, segment, None)
    assert got.shape == hidden.shape and torch.isfinite(got).all()
