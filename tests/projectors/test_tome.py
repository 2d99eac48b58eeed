"""ToMe merging against a naive per-frame, per-token implementation of one bipartite round."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_viper.projectors import ToMeProjector, tome_merge


def naive_round(x: Tensor, sizes: Tensor, r: int, heads: int) -> tuple[Tensor, Tensor]:
    """One round of bipartite soft matching on one frame, with Python loops. x (n, D), sizes (n,)."""
    n, d = x.shape
    hd = d // heads
    a_places, b_places = list(range(0, n, 2)), list(range(1, n, 2))

    def sim(i: int, j: int) -> float:
        total = 0.0
        for h in range(heads):
            u, v = x[i, h * hd : (h + 1) * hd], x[j, h * hd : (h + 1) * hd]
            total += float(u @ v) / (math.sqrt(float(u @ u)) * math.sqrt(float(v @ v)))
        return total / heads

    best = []  # (similarity, A place, B place)
    for i in a_places:
        scores = [sim(i, j) for j in b_places]
        j = max(range(len(b_places)), key=lambda t: (scores[t], -t))
        best.append((scores[j], i, b_places[j]))
    merged = sorted(best, key=lambda e: (-e[0], e[1]))[:r]
    groups = {p: [p] for p in range(n)}
    for _, i, j in merged:
        groups[j].append(i)
        del groups[i]
    out, out_sizes = [], []
    for place in sorted(groups):
        members = groups[place]
        total = sum(float(sizes[m]) for m in members)
        out.append(sum(x[m] * float(sizes[m]) for m in members) / total)
        out_sizes.append(total)
    return torch.stack(out), torch.tensor(out_sizes, dtype=x.dtype)


@pytest.mark.parametrize("n", [8, 9, 15])
def test_one_round_matches_naive(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, 12, generator=g, dtype=torch.float64)
    sizes = torch.randint(1, 5, (3, n), generator=g).double()
    r = n // 2 - 1
    out, out_sizes = tome_merge(x, sizes, n - r, num_heads=3)
    for f in range(3):
        ref, ref_sizes = naive_round(x[f], sizes[f], r, heads=3)
        torch.testing.assert_close(out[f], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out_sizes[f], ref_sizes)


@pytest.mark.parametrize(("p", "target"), [(729, 16), (64, 16), (50, 7), (31, 16), (17, 1), (16, 16), (5, 9)])
def test_exact_count_and_sizes(p: int, target: int) -> None:
    x = torch.randn(4, p, 32, generator=torch.Generator().manual_seed(p))
    out, sizes = tome_merge(x, None, target)
    n = min(p, target)
    assert out.shape == (4, n, 32) and sizes.shape == (4, n)
    torch.testing.assert_close(sizes.sum(1), torch.full((4,), float(p)))
    assert bool((sizes >= 1).all())


def test_several_rounds_match_naive() -> None:
    """729 -> 16 takes rounds of r = 364, 182, 91, 46, 23, 7: compare the first frames' result."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 45, 8, generator=g, dtype=torch.float64)
    out, sizes = tome_merge(x, None, 7, num_heads=2)
    for f in range(2):
        cur, cur_sizes = x[f], torch.ones(45, dtype=torch.float64)
        while cur.shape[0] > 7:
            cur, cur_sizes = naive_round(cur, cur_sizes, min(cur.shape[0] - 7, cur.shape[0] // 2), heads=2)
        torch.testing.assert_close(out[f], cur, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sizes[f], cur_sizes)


def test_identical_tokens_merge_losslessly() -> None:
    token = torch.randn(1, 1, 32)
    x = token.expand(3, 729, 32).clone()
    out, sizes = tome_merge(x, None, 16)
    assert torch.equal(out, token.expand(3, 16, 32))
    assert sizes.sum().item() == 3 * 729


def test_size_weighted_mean_preserves_the_total() -> None:
    """Sum over tokens of size * feature is invariant under merging (mass conservation)."""
    x = torch.randn(5, 101, 16, dtype=torch.float64)
    out, sizes = tome_merge(x, None, 10, num_heads=4)
    torch.testing.assert_close((out * sizes[..., None]).sum(1), x.sum(1))


def test_projector_shapes_and_bind() -> None:
    torch.manual_seed(0)
    proj = ToMeProjector(tokens_per_frame=16, num_heads=4)
    with pytest.raises(RuntimeError, match="bind"):
        proj(torch.randn(2, 49, 32))
    proj.bind(32, 24)
    assert proj(torch.randn(2, 49, 32)).shape == (2, 16, 24)
    assert proj.tokens_per_frame(729) == 16 and proj.tokens_per_frame(9) == 9
    out = proj(torch.randn(2, 49, 32, dtype=torch.float32))
    out.sum().backward()
    assert proj.mlp is not None and proj.mlp.fc1.weight.grad is not None
    with pytest.raises(ValueError, match="num_heads"):
        ToMeProjector(num_heads=5).bind(32, 24)
