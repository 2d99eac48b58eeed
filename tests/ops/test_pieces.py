"""in_pieces: a scan or conv split into pieces (state carried, reset at run starts) equals one call."""

import pytest
import torch

from lightning_viper.ops import pieces
from lightning_viper.ops.conv import causal_conv1d
from lightning_viper.ops.pieces import (
    INT32_LIMIT,
    in_pieces,
    map_rows,
    reach,
    split_rows,
    tokens_per_call,
    tokens_per_piece,
    within_reach,
)
from lightning_viper.ops.ssd import ssd_scan

T = 29
# row 0: one run; row 1: runs that start exactly at piece starts 8 and 16 and inside pieces
SEQ_IDX = torch.tensor([[0] * T, [0] * 8 + [1] * 8 + [2] * 3 + [3] * 10])


@pytest.mark.parametrize("max_tokens", [4, 7, 16])
def test_scan_pieces_equal_one_scan(max_tokens: int) -> None:
    torch.manual_seed(0)
    bt, h, p, g, n = 2, 4, 3, 2, 5
    kw = dict(
        x=torch.randn(bt, T, h, p, dtype=torch.float64),
        dt=torch.randn(bt, T, h, dtype=torch.float64),
        A=-torch.rand(h, dtype=torch.float64),
        B=torch.randn(bt, T, g, n, dtype=torch.float64),
        C=torch.randn(bt, T, g, n, dtype=torch.float64),
        chunk_size=4,
        D=torch.randn(h, dtype=torch.float64),
        dt_softplus=True,
        initial_state=torch.randn(bt, h, p, n, dtype=torch.float64),
        seq_idx=SEQ_IDX,
    )
    y_whole, final_whole = ssd_scan(**kw)
    y, final = in_pieces(ssd_scan, max_tokens, ("x", "dt", "B", "C"), **kw)
    # the scan accumulates in float32 internally: compare at float32 rounding
    torch.testing.assert_close(y, y_whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, final_whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_tokens", [2, 5, 8])
def test_conv_pieces_equal_one_conv(max_tokens: int) -> None:
    torch.manual_seed(1)
    c, k = 6, 4
    kw = dict(
        x=torch.randn(2, T, c, dtype=torch.float64),
        weight=torch.randn(c, k, dtype=torch.float64),
        bias=torch.randn(c, dtype=torch.float64),
        initial_state=torch.randn(2, c, k - 1, dtype=torch.float64),
        seq_idx=SEQ_IDX,
    )
    y_whole, final_whole = causal_conv1d(**kw)
    y, final = in_pieces(causal_conv1d, max_tokens, ("x",), **kw)
    torch.testing.assert_close(y, y_whole)
    torch.testing.assert_close(final, final_whole)


def test_pieces_without_runs_carry_the_state() -> None:
    torch.manual_seed(2)
    x, w = torch.randn(1, 10, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    y_whole, _ = causal_conv1d(x, w)
    y, _ = in_pieces(causal_conv1d, 3, ("x",), x=x, weight=w, initial_state=torch.zeros(1, 3, 1, dtype=x.dtype))
    torch.testing.assert_close(y, y_whole)


def test_tokens_per_call() -> None:
    # the 9B model's scan: 128 heads x 80 per token, chunk 256 -> 209,664 tokens (about 13.1k frames)
    limit = tokens_per_call(128 * 80, 256)
    assert limit % 256 == 0 and limit * 128 * 80 <= INT32_LIMIT < (limit + 256) * 128 * 80
    assert limit == 209_664
    with pytest.raises(ValueError, match="positive"):
        tokens_per_call(0)
    with pytest.raises(ValueError, match="no piece fits"):
        tokens_per_call(2**31)


def test_reach_counts_what_a_slice_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """A column slice of a wider projection reaches its full width per token; a piece whose reach
    passes the 32-bit limit is copied compact, one that fits is handed over as it lies."""
    proj = torch.zeros(1, 10, 22)  # one row, 10 tokens, in_proj 22 wide
    dt = proj[:, :, 20:]  # (1, 10, 2), time stride 22
    assert reach(dt) == 9 * 22 + 2 and reach(proj[:, :0]) == 0
    monkeypatch.setattr(pieces, "INT32_LIMIT", 9 * 22 + 2)
    assert within_reach(dt) is dt
    monkeypatch.setattr(pieces, "INT32_LIMIT", 9 * 22 + 1)
    copied = within_reach(dt)
    assert copied.is_contiguous() and copied.data_ptr() != dt.data_ptr() and torch.equal(copied, dt)


def test_tokens_per_piece_follows_the_strides() -> None:
    # the 9B mixer, one row: dt as in_proj's slice reaches 22,656 elements per token, the conv
    # output's x slice 12,288 -> 94,720 or 174,592 tokens per scan call (vs 209,664 contiguous)
    proj = torch.empty_strided((1, 4, 22_656), (4 * 22_656, 22_656, 1), device="meta")
    conv_out = torch.empty_strided((1, 4, 12_288), (4 * 12_288, 12_288, 1), device="meta")
    x = conv_out[:, :, :10_240].unflatten(-1, (128, 80))
    dt = proj[:, :, -128:]
    assert tokens_per_piece(x, multiple_of=256) == 174_592 == INT32_LIMIT // 12_288 // 256 * 256
    assert tokens_per_piece(x, dt, multiple_of=256) == INT32_LIMIT // 22_656 // 256 * 256
    assert tokens_per_piece(x, dt.contiguous(), multiple_of=256) == 174_592
    # several rows: their pieces are copied compact, so B x the token's elements count
    rows = torch.empty(3, 4, 128, 80, device="meta")
    assert tokens_per_piece(rows[:, :, :, :40]) == tokens_per_call(3 * 128 * 40)


def test_map_rows_in_pieces_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces, "ROWS_PER_PIECE", 5)
    x, g = torch.randn(3, 7, 4), torch.randn(3, 7, 4)
    calls: list[int] = []

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (N, 4) x2 -> (N, 2)
        calls.append(a.shape[:-1].numel())
        return torch.stack([(a * b).sum(-1), a.max(-1).values], -1)

    want = fn(x, g)
    calls.clear()
    with torch.no_grad():
        got = map_rows(fn, x, g)
    assert calls == [5, 5, 5, 5, 1]  # 21 rows
    torch.testing.assert_close(got, want)
    calls.clear()
    assert map_rows(fn, x, g).shape == (3, 7, 2) and calls == [21]  # autograd on: one call


@pytest.mark.parametrize("family", ["hybrid", "qwen2"])
def test_backbone_without_autograd_is_the_same_in_row_pieces(monkeypatch: pytest.MonkeyPatch, family: str) -> None:
    from lightning_viper.backbones import tiny_hybrid, tiny_qwen2
    from tests.backbones.test_nemotron_h_helpers import packed_state

    torch.manual_seed(0)
    model = (tiny_hybrid(kernels="torch") if family == "hybrid" else tiny_qwen2()).eval()
    state = packed_state([[20, 9], [30]])
    ids = torch.randint(0, model.vocab_size, state.mask.shape)
    with torch.no_grad():
        want = model(model.embed(ids), state).hidden
        monkeypatch.setattr(pieces, "ROWS_PER_PIECE", 7)
        got = model(model.embed(ids), state).hidden
    torch.testing.assert_close(got, want)  # not bitwise: BLAS may block 7-row pieces differently


def test_split_rows_keeps_values_and_gradients() -> None:
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(2, 11, 4, requires_grad=True)

    def fn(a: torch.Tensor) -> torch.Tensor:  # (N, 4) -> (N, 3)
        return torch.tanh(a @ w)

    want = fn(x)
    (gx_want, gw_want) = torch.autograd.grad(want.square().sum(), (x, w))
    got = split_rows(fn, 5, x)  # 22 rows -> 5 + 5 + 5 + 5 + 2, concatenated under autograd
    (gx, gw) = torch.autograd.grad(got.square().sum(), (x, w))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gx, gx_want)
    torch.testing.assert_close(gw, gw_want)
    with torch.no_grad():
        torch.testing.assert_close(split_rows(fn, 5, x), want.detach())


def test_slices_cover_the_positions_once() -> None:
    assert list(pieces.slices(7, 3)) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert list(pieces.slices(6, 3)) == [slice(0, 3), slice(3, 6)]
    assert list(pieces.slices(0, 3)) == []
