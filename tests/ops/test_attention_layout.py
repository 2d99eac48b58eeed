"""RowLayout: the host-side layout that lets causal_attention skip its device check, against the
naive reference, and row_layout's refusal of the layouts it cannot describe."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.ops.attention import RowLayout, causal_attention, row_layout
from tests.ops.test_attention import make_layout, naive_attention


@pytest.mark.parametrize("tq", [2, 4, 9])
@pytest.mark.parametrize("rows", [[[9]], [[9], [9]], [[9], [4], [6]], [[5], [5]], [[9], [0], [3]]])
def test_a_known_layout_gives_the_checked_result(rows: list[list[int]], tq: int) -> None:
    """Each chunk of a left-padded prefill: the keys so far (``prefix``) against the naive loop."""
    gen = torch.Generator().manual_seed(0)
    tk = 9
    mask, segment = make_layout([[n for n in r if n] for r in rows], tk)
    layout = row_layout(mask, segment)
    assert layout == RowLayout(tuple(r[0] for r in rows))
    q, k, v = (torch.randn(len(rows), h, n, 8, generator=gen) for h, n in ((4, tk), (2, tk), (2, tk)))
    for end in range(tq, tk + 1, tq):  # the chunk [end - tq, end) and its keys [0, end)
        keys = layout.prefix(tk, end)
        qs = segment[:, end - tq : end]
        args = (q[:, :, end - tq : end], k[:, :, :end], v[:, :, :end], mask[:, :end], segment[:, :end], qs, 0.3)
        got = causal_attention(*args, layout=keys)
        torch.testing.assert_close(got, causal_attention(*args), rtol=0, atol=0)
        torch.testing.assert_close(got.double(), naive_attention(*args), atol=1e-5, rtol=1e-5)


def test_packed_rows_and_holes_have_no_layout() -> None:
    mask, segment = make_layout([[3, 4], [5]], 7)
    assert row_layout(mask, segment) is None  # two segments in row 0
    holes = torch.tensor([[True, False, True]])
    assert row_layout(holes, torch.tensor([[0, -1, 0]])) is None
    assert row_layout(torch.ones(1, 3, dtype=torch.bool), torch.tensor([[0, 0, 0]])) == RowLayout((3,))


def test_a_layout_for_other_rows_is_refused() -> None:
    mask, segment = make_layout([[3]], 3)
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match="layout describes 2 rows"):
        causal_attention(q, q, q, mask, segment, segment, 1.0, layout=RowLayout((3, 3)))
