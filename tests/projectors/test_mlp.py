"""MLPProjector: the two-layer MLP and grid pooling against explicit computations."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.projectors import MLPProjector


def test_mlp_matches_formula() -> None:
    torch.manual_seed(0)
    proj = MLPProjector()
    proj.bind(12, 20)
    x = torch.randn(3, 10, 12)
    assert proj.mlp is not None
    w1, b1, w2, b2 = proj.mlp.fc1.weight, proj.mlp.fc1.bias, proj.mlp.fc2.weight, proj.mlp.fc2.bias
    h = x @ w1.T + b1
    h = 0.5 * h * (1 + torch.erf(h / 2**0.5))  # exact GELU
    torch.testing.assert_close(proj(x), h @ w2.T + b2)
    assert proj.tokens_per_frame(10) == 10


def test_pooling_averages_grid_blocks() -> None:
    torch.manual_seed(0)
    proj = MLPProjector(tokens_per_frame=4)
    proj.bind(3, 5)
    x = torch.randn(2, 36, 3)  # 6 x 6 grid, row-major -> 2 x 2 blocks of 3 x 3
    grid = x.view(2, 6, 6, 3)
    ref = torch.stack(
        [grid[:, i * 3 : (i + 1) * 3, j * 3 : (j + 1) * 3].mean(dim=(1, 2)) for i in range(2) for j in range(2)], 1
    )
    torch.testing.assert_close(proj.pool(x), ref)
    assert proj(x).shape == (2, 4, 5)
    assert proj.tokens_per_frame(36) == 4


def test_uneven_pooling_729_to_16() -> None:
    proj = MLPProjector(tokens_per_frame=16)
    proj.bind(8, 8)
    x = torch.ones(1, 729, 8)
    torch.testing.assert_close(proj.pool(x), torch.ones(1, 16, 8))


def test_errors() -> None:
    with pytest.raises(ValueError, match="square"):
        MLPProjector(tokens_per_frame=10)
    proj = MLPProjector(tokens_per_frame=16)
    with pytest.raises(RuntimeError, match="bind"):
        proj(torch.randn(1, 36, 4))
    proj.bind(4, 4)
    with pytest.raises(ValueError, match="square"):
        proj(torch.randn(1, 35, 4))
    with pytest.raises(ValueError, match="more than"):
        proj(torch.randn(1, 9, 4))
    with pytest.raises(ValueError, match="rebind"):
        proj.bind(5, 4)
    proj.bind(4, 4)  # same widths: no-op
