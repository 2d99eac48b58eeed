"""The two-layer MLP projector, with optional average pooling of each frame's patch grid."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_viper.projectors.base import Projector


def square_side(count: int, what: str) -> int:
    """The side of a square grid of ``count`` cells, or raise naming ``what``."""
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"{what} must be a square number (n x n grid), got {count}")
    return side


class MLPHead(nn.Module):
    """Linear(vision_dim, llm_dim) -> GELU -> Linear(llm_dim, llm_dim). (..., Dv) -> (..., D)."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class MLPProjector(Projector):
    """Per-frame patch features -> LLM tokens through a two-layer MLP.

    Args:
        tokens_per_frame: if set (a square number n*n), each frame's square patch grid is first
            average-pooled to n x n (``adaptive_avg_pool2d``: bins of nearly equal size); if None,
            every patch becomes a token.

    Call :meth:`bind` (``VideoLM`` does) before use. (F, P, Dv) -> (F, N, D).
    """

    def __init__(self, tokens_per_frame: int | None = None) -> None:
        super().__init__()
        if tokens_per_frame is not None:
            if tokens_per_frame < 1:
                raise ValueError(f"tokens_per_frame must be positive or None, got {tokens_per_frame}")
            square_side(tokens_per_frame, "MLPProjector tokens_per_frame")
        self.num_tokens = tokens_per_frame
        self.mlp: MLPHead | None = None

    def bind(self, vision_dim: int, llm_dim: int) -> None:
        if self.mlp is not None:
            if (self.mlp.fc1.in_features, self.mlp.fc2.out_features) != (vision_dim, llm_dim):
                raise ValueError(
                    f"{type(self).__name__} is already bound to widths ({self.mlp.fc1.in_features}, "
                    f"{self.mlp.fc2.out_features}); cannot rebind to ({vision_dim}, {llm_dim})"
                )
            return
        self.mlp = MLPHead(vision_dim, llm_dim)

    def tokens_per_frame(self, num_patches: int) -> int:
        if self.num_tokens is None:
            return num_patches
        if self.num_tokens > num_patches:
            raise ValueError(f"tokens_per_frame={self.num_tokens} is more than the {num_patches} patches of a frame")
        return self.num_tokens

    def pool(self, features: Tensor) -> Tensor:
        """(F, P, Dv) -> (F, N, Dv) by average pooling the sqrt(P) x sqrt(P) grid (row-major patches)."""
        f, p, dv = features.shape
        n = self.tokens_per_frame(p)
        if n == p:
            return features
        side = square_side(p, "patches per frame for pooling")
        grid = features.transpose(1, 2).reshape(f, dv, side, side)  # (F, Dv, s, s)
        out = F.adaptive_avg_pool2d(grid, math.isqrt(n))  # (F, Dv, n', n')
        return out.flatten(2).transpose(1, 2)  # (F, N, Dv)

    def forward(self, features: Tensor) -> Tensor:
        """(F, P, Dv) -> (F, N, D)."""
        if self.mlp is None:
            raise RuntimeError(f"{type(self).__name__}: call bind(vision_dim, llm_dim) before use (VideoLM does this)")
        out: Tensor = self.mlp(self.pool(features))
        return out
