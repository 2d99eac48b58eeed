"""A small fake backbone whose attention scores are given, and builders of left-padded packed batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_viper.backbones.base import Backbone, LayerKind
from lightning_viper.sequence import SequenceState, TokenKind, contiguous_positions, gather_tokens

# a sample = (text before video, vision, instruction, response) token counts
Sample = tuple[int, int, int, int]


class FakeNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(dim))
        self.eps = 1e-5

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class FakeAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, bias: bool) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=False)


class FakeBlock(nn.Module):
    """Per-token residual MLP (tokens never interact, so outputs do not depend on compression)."""

    def __init__(self, dim: int, kind: LayerKind, bias: bool) -> None:
        super().__init__()
        self.norm = FakeNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.attn = FakeAttention(dim, 4, 2, dim // 4, bias) if kind in ("attention", "decoder") else None

    def forward(self, hidden: Tensor, state: SequenceState) -> Tensor:
        return hidden + torch.tanh(self.fc(self.norm(hidden))) * state.mask[..., None].to(hidden.dtype)


class FakeBackbone(Backbone):
    """Backbone with given attention scores: ``token_scores`` (B0, T0) indexed by token origin."""

    def __init__(self, kinds: Sequence[LayerKind] = ("mamba", "attention", "mlp", "decoder"), dim: int = 16) -> None:
        super().__init__()
        self.hidden_size, self.vocab_size = dim, 11
        self.layer_kinds = tuple(kinds)
        self.layers = nn.ModuleList(FakeBlock(dim, k, bias=(i % 2 == 1)) for i, k in enumerate(kinds))
        self.emb = nn.Embedding(self.vocab_size, dim)
        self.token_scores: Tensor | None = None
        self.score_calls: list[int] = []

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.emb(input_ids)

    def final_norm(self, hidden: Tensor) -> Tensor:
        return hidden

    def logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.emb.weight.T

    def run_layer(self, index: int, hidden: Tensor, state: SequenceState, cache: Any | None) -> Tensor:
        return self.layers[index](hidden, state)

    def attention_scores(self, layer: int, hidden: Tensor, state: SequenceState) -> Tensor:
        assert self.token_scores is not None, "set token_scores first"
        self.score_calls.append(layer)
        return gather_tokens(self.token_scores, state, 0.0).float()

    def attention_module(self, layer: int) -> nn.Module:
        attn = self.layers[layer].attn
        if attn is None:
            raise ValueError(f"layer {layer} has no attention")
        return attn

    def attention_norm(self, layer: int) -> nn.Module:
        self.attention_module(layer)
        return self.layers[layer].norm

    def new_cache(self, batch_size: int) -> Any:
        return None

    def decode(self, hidden: Tensor, cache: Any) -> Tensor:
        raise NotImplementedError("the fake backbone does not generate")


def make_state(rows: Sequence[Sequence[Sample]]) -> SequenceState:
    """Left-padded (B, T) state; each row holds one or more samples (packed), in order."""
    kinds_rows: list[list[int]] = []
    seg_rows: list[list[int]] = []
    seg_row: list[int] = []
    n_vis: list[int] = []
    for r, samples in enumerate(rows):
        kinds: list[int] = []
        segs: list[int] = []
        for text, vis, instr, resp in samples:
            s = len(seg_row)
            seg_row.append(r)
            n_vis.append(vis)
            part = [TokenKind.TEXT] * text + [TokenKind.VISION] * vis
            part += [TokenKind.INSTRUCTION] * instr + [TokenKind.RESPONSE] * resp
            kinds += [int(k) for k in part]
            segs += [s] * len(part)
        kinds_rows.append(kinds)
        seg_rows.append(segs)
    t = max(len(k) for k in kinds_rows)
    kind = torch.tensor([[0] * (t - len(k)) + k for k in kinds_rows])
    segment = torch.tensor([[-1] * (t - len(s)) + s for s in seg_rows])
    mask = segment >= 0
    cols = torch.arange(t).expand(len(rows), t)
    return SequenceState(
        mask=mask,
        kind=kind,
        segment=segment,
        position=contiguous_positions(mask, segment),
        origin=torch.where(mask, cols, torch.full_like(cols, -1)),
        segment_row=torch.tensor(seg_row),
        num_vision_orig=torch.tensor(n_vis),
    )


# odd and different lengths, left padding, a packed row with 2 segments, a text-only segment
ROWS: list[list[Sample]] = [
    [(2, 7, 3, 2)],
    [(1, 10, 2, 0)],
    [(3, 5, 1, 1), (2, 9, 4, 0)],
    [(2, 13, 3, 1)],
    [(4, 0, 2, 1)],
]


@pytest.fixture
def state() -> SequenceState:
    return make_state(ROWS)


@pytest.fixture
def backbone() -> FakeBackbone:
    torch.manual_seed(0)
    return FakeBackbone()


@pytest.fixture
def hidden(state: SequenceState) -> Tensor:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(state.batch_size, state.length, 16, generator=g, dtype=torch.float64)
    return h * state.mask[..., None]
