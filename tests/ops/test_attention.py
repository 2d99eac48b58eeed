"""causal_attention against a naive per-query softmax loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_viper.ops import attention
from lightning_viper.ops.attention import causal_attention

from ..memory_watch import BigOutputs


def naive_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, key_segment: Tensor, query_segment: Tensor, scale: float
) -> Tensor:
    """Loop over batch, head and query: softmax(q.k * scale) over the allowed keys."""
    b, hq, tq, hd = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    out = torch.zeros(b, hq, tq, hd, dtype=torch.float64)
    for row in range(b):
        for h in range(hq):
            kv_head = h // (hq // hkv)
            for i in range(tq):
                pos = tk - tq + i
                seg = int(query_segment[row, i])
                keys = [
                    j for j in range(pos + 1) if bool(key_mask[row, j]) and int(key_segment[row, j]) == seg and seg >= 0
                ]
                if not keys:
                    continue
                logits = [float(q[row, h, i].double() @ k[row, kv_head, j].double()) * scale for j in keys]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                total = sum(weights)
                for w, j in zip(weights, keys, strict=True):
                    out[row, h, i] += (w / total) * v[row, kv_head, j].double()
    return out


def make_layout(lengths: list[list[int]], tk: int) -> tuple[Tensor, Tensor]:
    """Left-padded rows; each row is a list of segment lengths (packed when > 1)."""
    mask = torch.zeros(len(lengths), tk, dtype=torch.bool)
    segment = torch.full((len(lengths), tk), -1, dtype=torch.long)
    next_seg = 0
    for row, segs in enumerate(lengths):
        col = tk - sum(segs)
        for n in segs:
            mask[row, col : col + n] = True
            segment[row, col : col + n] = next_seg
            next_seg += 1
            col += n
    return mask, segment


def run_case(lengths: list[list[int]], tk: int, tq: int, hq: int = 4, hkv: int = 2, hd: int = 8) -> None:
    gen = torch.Generator().manual_seed(0)
    b = len(lengths)
    key_mask, key_segment = make_layout(lengths, tk)
    query_segment = key_segment[:, tk - tq :]
    q = torch.randn(b, hq, tq, hd, generator=gen)
    k = torch.randn(b, hkv, tk, hd, generator=gen)
    v = torch.randn(b, hkv, tk, hd, generator=gen)
    scale = hd**-0.5
    got = causal_attention(q, k, v, key_mask, key_segment, query_segment, scale)
    want = naive_attention(q, k, v, key_mask, key_segment, query_segment, scale)
    assert got.shape == (b, hq, tq, hd)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # padding queries are exact zeros
    assert (got.permute(0, 2, 1, 3)[query_segment < 0] == 0).all()


@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_single_sequence_full_prefill(hkv: int) -> None:
    run_case([[7]], tk=7, tq=7, hq=4, hkv=hkv)


def test_left_padded_batch() -> None:
    run_case([[9], [4], [6]], tk=9, tq=9)


def test_equal_lengths_batch_uses_one_group() -> None:
    run_case([[5], [5]], tk=5, tq=5)


def test_packed_segments() -> None:
    run_case([[3, 4, 2], [5], [2, 2]], tk=9, tq=9)


@pytest.mark.parametrize("tq", [1, 3, 5])
def test_chunked_prefill_and_decode(tq: int) -> None:
    run_case([[9], [4], [2, 5]], tk=9, tq=tq)


def test_query_window_longer_than_a_rows_keys() -> None:
    # row 1 has 2 valid keys but 4 queries: its first 2 queries are padding
    run_case([[6], [2]], tk=6, tq=4)


def test_segment_before_query_window_is_skipped() -> None:
    # packed row whose first segment lies entirely before the queries
    run_case([[3, 3]], tk=6, tq=2)


def test_holes_in_key_mask_use_the_masked_path() -> None:
    gen = torch.Generator().manual_seed(1)
    tk, tq, h, hd = 6, 6, 2, 4
    key_mask = torch.tensor([[True, False, True, True, True, True]])
    key_segment = torch.tensor([[0, -1, 0, 0, 0, 0]])
    query_segment = key_segment.clone()
    q, k, v = (torch.randn(1, h, n, hd, generator=gen) for n in (tq, tk, tk))
    got = causal_attention(q, k, v, key_mask, key_segment, query_segment, 0.5)
    want = naive_attention(q, k, v, key_mask, key_segment, query_segment, 0.5)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_gradients_flow_and_padding_rows_have_none() -> None:
    gen = torch.Generator().manual_seed(2)
    key_mask, key_segment = make_layout([[5], [3]], 5)
    q = torch.randn(2, 2, 5, 4, generator=gen, requires_grad=True)
    k = torch.randn(2, 1, 5, 4, generator=gen, requires_grad=True)
    v = torch.randn(2, 1, 5, 4, generator=gen, requires_grad=True)
    causal_attention(q, k, v, key_mask, key_segment, key_segment, 0.5).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert (q.grad[1, :, :2] == 0).all()  # padding queries of row 1
    assert k.grad is not None and (k.grad[1, :, :2] == 0).all()


@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_chunk_over_long_prefix_never_repeats_keys(hkv: int) -> None:
    """A chunk's queries over many earlier keys with grouped heads (lower-right causal bias, whose
    kernels take no grouped heads): one call per group member, k and v never repeated, and the
    naive result. The watch records any new tensor as large as one row's keys."""
    hq, tk, tq, hd = 8, 40, 8, 8
    with BigOutputs(hkv * tk * hd * 4) as watch:  # one row's k (fp32): a repeat is at least this
        run_case([[tk], [tk - 3]], tk=tk, tq=tq, hq=hq, hkv=hkv, hd=hd)
    assert "repeat_interleave" not in watch.ops and "repeat" not in watch.ops, watch.ops


@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_masked_grouped_heads_match_naive_without_repeats(hkv: int) -> None:
    """masked_attention (TransV's cross-attention, rows with holes) with grouped heads: the naive
    result, and no keys repeated by us (that SDPA runs a fused kernel, not its math fallback,
    is checked on the GPU: test_gpu_prefill_attention_never_runs_cudnn)."""
    gen = torch.Generator().manual_seed(4)
    hq, tq, tk, hd = 8, 3, 50, 8
    q = torch.randn(2, hq, tq, hd, generator=gen)
    k, v = (torch.randn(2, hkv, tk, hd, generator=gen) for _ in range(2))
    allowed = torch.rand(2, tq, tk, generator=gen) < 0.5
    allowed[1, 2] = False  # a query with no key gets 0
    with BigOutputs(hq * tk * hd * 4) as watch:  # k repeated to every query head (fp32)
        got = attention.masked_attention(q, k, v, allowed, hd**-0.5)
    assert "repeat_interleave" not in watch.ops and "repeat" not in watch.ops, watch.ops
    want = torch.zeros(2, hq, tq, hd, dtype=torch.float64)
    for n in range(2):
        for h in range(hq):
            g = h // (hq // hkv)
            for i in range(tq):
                keys = allowed[n, i].nonzero().flatten()
                if len(keys) == 0:
                    continue
                w = torch.softmax((k[n, g, keys].double() @ q[n, h, i].double()) * hd**-0.5, 0)
                want[n, h, i] = w @ v[n, g, keys].double()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_rejects_bad_heads() -> None:
    q = torch.zeros(1, 3, 2, 4)
    k = torch.zeros(1, 2, 2, 4)
    mask = torch.ones(1, 2, dtype=torch.bool)
    seg = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="multiple"):
        causal_attention(q, k, k, mask, seg, seg, 1.0)


def dense_decode_reference(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, scale: float) -> Tensor:
    """softmax(q k^T * scale) v in float64 over the allowed keys, heads repeated explicitly:
    q (B, Hq, 1, hd), k / v (B, Hkv, Tk, hd), allowed (B, Tk) -> (B, Hq, 1, hd); no key -> 0."""
    rep = q.shape[1] // k.shape[1]
    kk, vv = (x.double().repeat_interleave(rep, dim=1) for x in (k, v))  # (B, Hq, Tk, hd)
    logits = (q.double() @ kk.transpose(-1, -2)) * scale  # (B, Hq, 1, Tk)
    logits = logits.masked_fill(~allowed[:, None, None, :], float("-inf"))
    weights = torch.softmax(logits, -1).nan_to_num(0.0)
    return weights @ vv


@pytest.mark.parametrize(("tk", "piece"), [(300, 300), (2304, 768), (3584, 1792), (4099, 2048), (6144, 2048)])
def test_decode_sums_key_pieces(tk: int, piece: int) -> None:
    """One query over thousands of keys: P @ V is summed over key pieces (with a shorter last
    one when tk has no divisor in range), with padding, a packed row and an empty row."""
    assert attention._key_piece(tk) == piece
    gen = torch.Generator().manual_seed(tk)
    b, hq, hkv, hd = 4, 6, 2, 8
    key_mask, key_segment = make_layout([[tk], [tk // 3], [tk - 40, 40], [0]], tk)
    query_segment = key_segment[:, -1:]
    q = torch.randn(b, hq, 1, hd, generator=gen)
    k = torch.randn(b, hkv, tk, hd, generator=gen) * 2
    v = torch.randn(b, hkv, tk, hd, generator=gen)
    got = causal_attention(q, k, v, key_mask, key_segment, query_segment, hd**-0.5)
    allowed = key_mask & (key_segment == query_segment) & (query_segment >= 0)
    want = dense_decode_reference(q, k, v, allowed, hd**-0.5)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    assert (got[3] == 0).all()  # the row without keys
    if tk <= 300:  # the loop reference on a short row, to tie the dense one to the rest of this file
        naive = naive_attention(q, k, v, key_mask, key_segment, query_segment, hd**-0.5)
        torch.testing.assert_close(got.double(), naive, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_over_32k_keys_matches_float64() -> None:
    """The decode step's attention in bfloat16 on CUDA (float32 scores straight from cuBLAS,
    split-key P @ V) against float64 over a 32,768 + 256-key static cache, 7 query heads a group."""
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    b, hq, hkv, hd, tk = 2, 28, 4, 128, 33_024
    q = torch.randn(b, hq, 1, hd, generator=gen, device=dev)
    k = torch.randn(b, hkv, tk, hd, generator=gen, device=dev)
    v = torch.randn(b, hkv, tk, hd, generator=gen, device=dev)
    key_mask = torch.zeros(b, tk, dtype=torch.bool, device=dev)
    key_mask[0, :32_800] = True
    key_mask[1, 1_000:20_000] = True
    key_segment = torch.where(key_mask, 0, -1)
    qs = torch.zeros(b, 1, dtype=torch.long, device=dev)
    got = causal_attention(*(x.bfloat16() for x in (q, k, v)), key_mask, key_segment, qs, hd**-0.5)
    want = dense_decode_reference(*(x.bfloat16() for x in (q, k, v)), key_mask, hd**-0.5)
    torch.testing.assert_close(got.double(), want, atol=2e-3, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("tq", [1, 64, 256])
def test_gpu_bf16_matches_fp32_reference(tq: int) -> None:
    gen = torch.Generator().manual_seed(3)
    b, hq, hkv, tk, hd = 3, 8, 2, 256, 64
    key_mask, key_segment = make_layout([[256], [100], [60, 120]], tk)
    q = torch.randn(b, hq, tq, hd, generator=gen)
    k = torch.randn(b, hkv, tk, hd, generator=gen)
    v = torch.randn(b, hkv, tk, hd, generator=gen)
    qs = key_segment[:, tk - tq :]
    want = causal_attention(q, k, v, key_mask, key_segment, qs, hd**-0.5)
    dev = torch.device("cuda")
    got = causal_attention(
        *(x.to(dev, torch.bfloat16) for x in (q, k, v)), key_mask.to(dev), key_segment.to(dev), qs.to(dev), hd**-0.5
    )
    torch.testing.assert_close(got.float().cpu(), want, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_prefill_attention_never_runs_cudnn() -> None:
    """torch prefers cuDNN's fused attention on Hopper; ours must run flash / efficient instead
    (ops.attention.SDPA_BACKENDS), never the math fallback: whole rows, a chunk over earlier keys,
    a masked row (all with grouped heads), and TransV's masked cross-attention."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    tk, hd = 1024, 128
    q, k, v = (torch.randn(2, h, tk, hd, generator=gen, device=dev, dtype=torch.bfloat16) for h in (8, 2, 2))
    whole = torch.ones(2, tk, dtype=torch.bool, device=dev)
    seg = torch.zeros(2, tk, dtype=torch.long, device=dev)
    holes = whole.clone()
    holes[1, 10] = False
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        causal_attention(q, k, v, whole, seg, seg, hd**-0.5)
        causal_attention(q[:, :, -256:], k, v, whole, seg, seg[:, -256:], hd**-0.5)
        causal_attention(q, k, v, holes, torch.where(holes, seg, -1), torch.where(holes, seg, -1), hd**-0.5)
        attention.masked_attention(q[:, :, :16], k, v, holes[:, None, :].expand(2, 16, tk), hd**-0.5)
        torch.cuda.synchronize()
    names = [e.key.lower() for e in prof.key_averages()]
    assert not [n for n in names if "cudnn" in n], names
    # nor the math fallback (grouped heads with a mask or a lower-right bias ask for it)
    assert not [n for n in names if "attention_math" in n], names
    assert [n for n in names if "flash" in n or "fmha" in n or "attention" in n], names
