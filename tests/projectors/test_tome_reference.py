"""ToMe ``rule="reference"`` against a naive loop of the TimeViper reference rule: one cosine of the
head-averaged features, and after each round the unmerged A tokens by score, then the B tokens."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.projectors import ToMeProjector, tome_merge


def naive_reference_tome(frame: Tensor, target: int, heads: int) -> tuple[list[Tensor], list[float]]:
    """One frame (P, D) merged to ``target`` tokens, token by token with Python lists."""
    tokens = [frame[i] for i in range(frame.shape[0])]
    sizes = [1.0] * len(tokens)
    while len(tokens) > target:
        n = len(tokens)
        r = min(n - target, n // 2)
        metric = []
        for t in tokens:
            m = sum(t.view(heads, -1)[h] for h in range(heads)) / heads  # head-averaged feature
            metric.append(m / m.norm())
        a_idx, b_idx = list(range(0, n, 2)), list(range(1, n, 2))
        best = []
        for a in a_idx:
            sims = [float(metric[a] @ metric[b]) for b in b_idx]
            j = max(range(len(sims)), key=lambda i: sims[i])
            best.append((sims[j], j))
        order = sorted(range(len(a_idx)), key=lambda i: -best[i][0])
        merged, unmerged = order[:r], order[r:]
        b_sum = [tokens[b] * sizes[b] for b in b_idx]
        b_size = [sizes[b] for b in b_idx]
        for i in merged:
            j = best[i][1]
            b_sum[j] = b_sum[j] + tokens[a_idx[i]] * sizes[a_idx[i]]
            b_size[j] += sizes[a_idx[i]]
        tokens = [tokens[a_idx[i]] for i in unmerged] + [s / z for s, z in zip(b_sum, b_size, strict=True)]
        sizes = [sizes[a_idx[i]] for i in unmerged] + b_size
    return tokens, sizes


@pytest.mark.parametrize(("patches", "target", "heads"), [(16, 4, 2), (25, 7, 4), (12, 11, 1), (9, 1, 3)])
def test_matches_naive_reference(patches: int, target: int, heads: int) -> None:
    x = torch.randn(3, patches, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(patches))
    out, sizes = tome_merge(x, None, target, heads, rule="reference")
    assert out.shape == (3, target, 12)
    for f in range(3):
        toks, sz = naive_reference_tome(x[f], target, heads)
        torch.testing.assert_close(out[f], torch.stack(toks), rtol=1e-10, atol=1e-10)
        assert sizes[f].tolist() == sz
        assert sum(sz) == patches


def test_differs_from_ours() -> None:
    x = torch.randn(2, 16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours, _ = tome_merge(x, None, 4, 4)
    ref, _ = tome_merge(x, None, 4, 4, rule="reference")
    assert not torch.allclose(ours, ref)


def test_projector_rule_option() -> None:
    proj = ToMeProjector(tokens_per_frame=4, num_heads=2, rule="reference")
    proj.bind(8, 6)
    feats = torch.randn(2, 16, 8)
    assert proj.mlp is not None
    expected = proj.mlp(tome_merge(feats, None, 4, 2, rule="reference")[0])
    assert torch.equal(proj(feats), expected)
    with pytest.raises(ValueError, match="rule must be one of"):
        ToMeProjector(rule="exact")  # type: ignore[arg-type]
