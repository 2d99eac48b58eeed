"""Causal self-attention over left-padded, possibly packed sequences.

One op shared by every attention layer (Qwen2 decoder layers, Nemotron-H attention layers):
queries are the LAST ``Tq`` positions of the key sequence (``Tq == Tk`` in prefill, smaller in
chunked prefill and decode), keys carry a validity mask and a segment id, and a query attends to
the keys at or before its own position that are valid and belong to its own segment.

Three paths, chosen per row:

* **single-segment rows** (the common case): the valid keys are a contiguous suffix of the row,
  so the row is sliced and handed to ``scaled_dot_product_attention`` with lower-right causal
  alignment (no mask tensor). Rows with equal (keys, queries) counts are batched into one call,
  so on GPU the flash / memory-efficient kernels run without a (Tq x Tk) mask.
* **packed rows** whose segments are contiguous runs of valid keys: one sliced call per segment.
* anything else (e.g. holes in the key mask): an explicit boolean mask, (rows, 1, Tq, Tk).

Choosing a path needs host values (which rows are single-segment, their key counts). Read from the
device, that is a host sync in every attention layer; a caller that knows the layout passes a
:class:`RowLayout` instead (the backbone computes it once per forward with :func:`row_layout`).
A single query per row (decoding) needs no choice: one masked call over every key, no sync and
fixed shapes, so a decode step can be captured in a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right


@dataclass(frozen=True)
class RowLayout:
    """Host-side facts about the keys of one attention call, so choosing its path needs no sync.

    ``lengths[r]``: row r's real keys are its last ``lengths[r]`` columns, all of one segment, and
    its real queries are exactly the queries on those columns (padding queries carry segment -1).
    Unpadded or left-padded rows of one sample each are like this; packed rows are not (no layout).
    """

    lengths: tuple[int, ...]

    def prefix(self, width: int, end: int) -> RowLayout:
        """The layout of columns ``[0, end)`` of these ``width`` columns (a chunked prefill's keys so far)."""
        cut = width - end
        return RowLayout(tuple(max(0, n - cut) for n in self.lengths))


SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""The kernels every call here may use. cuDNN's fused attention is left out: torch 2.11 prefers it
on Hopper, and on the H200 it failed at random in a 131k-token prefill (``mha_graph.execute(...)
.is_good()``, then an illegal memory access that ends the process; pytorch/pytorch#190321, whose
workaround is to turn it off). Flash and memory-efficient attention cover every call made here."""


def _sdpa(q: Tensor, k: Tensor, v: Tensor, **kwargs: object) -> Tensor:
    """``scaled_dot_product_attention`` restricted to :data:`SDPA_BACKENDS`."""
    with sdpa_kernel(SDPA_BACKENDS):
        out: Tensor = F.scaled_dot_product_attention(q, k, v, **kwargs)  # type: ignore[arg-type]
    return out


def _per_group_member(q: Tensor, k: Tensor, v: Tensor, **kwargs: object) -> Tensor:
    """:func:`_sdpa` for grouped heads where the kernel has no grouped-query support: one call per
    member r of a group, over query heads r, r + G, ... (one per key/value head), so k and v are
    never repeated. q (N, Hq, Tq, hd); k, v (N, Hkv, Tk, hd) -> (N, Hq, Tq, hd).

    Memory-efficient attention (the kernel that takes a mask or a lower-right causal bias) has no
    grouped-query support: asked for it, SDPA falls back to the math kernel, which repeats k and v
    in float32 (31 GiB for TransV's 819k dropped tokens at 102,400 frames)."""
    rep = q.shape[1] // k.shape[1]
    if rep == 1:
        return _sdpa(q, k, v, **kwargs)
    grouped = q.unflatten(1, (k.shape[1], rep))  # (N, Hkv, rep, Tq, hd): query head g * rep + r
    out = q.new_empty(grouped.shape)
    for r in range(rep):
        out[:, :, r] = _sdpa(grouped[:, :, r], k, v, **kwargs)
    return out.flatten(1, 2)


def _sdpa_suffix(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Causal SDPA where the Tq queries are the last Tq of the Tk keys (lower-right alignment).

    q (N, Hq, Tq, hd); k, v (N, Hkv, Tk, hd) with Tq <= Tk -> (N, Hq, Tq, hd).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if tq == 1:  # decode: the single query sees every key
        return _sdpa(q, k, v, scale=scale, enable_gqa=gqa)
    if tq == tk:
        return _sdpa(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    # CausalBias's fused lower-right kernels take no grouped heads
    return _per_group_member(q, k, v, attn_mask=causal_lower_right(tq, tk), scale=scale)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, scale: float) -> Tensor:
    """SDPA with an explicit boolean mask ``allowed`` (N, Tq, Tk); rows with no allowed key -> 0.

    q (N, Hq, Tq, hd); k, v (N, Hkv, Tk, hd) -> (N, Hq, Tq, hd). The mask becomes one additive
    bias (N, 1, Tq, Tk) in q's dtype, shared by the calls of :func:`_per_group_member`.
    """
    empty = ~allowed.any(-1)  # (N, Tq)
    # give empty rows one dummy key so softmax stays finite, then zero them
    safe = allowed.clone()
    safe[..., 0] |= empty
    bias = torch.zeros(safe.shape, dtype=q.dtype, device=q.device).masked_fill_(~safe, float("-inf"))
    del safe
    bias = bias.unsqueeze(1)  # (N, 1, Tq, Tk)
    out = _per_group_member(q, k, v, attn_mask=bias, scale=scale)
    return out.masked_fill(empty[:, None, :, None], 0.0)


def allowed_keys(key_mask: Tensor, key_segment: Tensor, query_segment: Tensor) -> Tensor:
    """(B, Tq, Tk) bool: query i (at key position Tk - Tq + i) may attend key j."""
    tq, tk = query_segment.shape[1], key_mask.shape[1]
    qpos = torch.arange(tk - tq, tk, device=key_mask.device)  # (Tq,)
    kpos = torch.arange(tk, device=key_mask.device)  # (Tk,)
    causal = kpos[None, :] <= qpos[:, None]  # (Tq, Tk)
    same = query_segment[:, :, None] == key_segment[:, None, :]  # (B, Tq, Tk)
    valid_q = (query_segment >= 0)[:, :, None]
    return causal[None] & same & key_mask[:, None, :] & valid_q


def _single_segment_rows(key_mask: Tensor, key_segment: Tensor, query_segment: Tensor) -> tuple[Tensor, Tensor]:
    """Which rows are one segment on a contiguous key suffix with matching queries.

    Returns ``ok`` (B,) bool and ``n`` (B,) valid-key counts.
    """
    tk = key_mask.shape[1]
    tq = query_segment.shape[1]
    n = key_mask.sum(1)  # (B,)
    cols = torch.arange(tk, device=key_mask.device)
    suffix = (key_mask == (cols[None, :] >= (tk - n)[:, None])).all(1)  # (B,)
    big = torch.iinfo(key_segment.dtype).max
    seg_max = torch.where(key_mask, key_segment, -1).amax(1)  # (B,)
    seg_min = torch.where(key_mask, key_segment, big).amin(1)
    one_seg = (seg_max == seg_min) & (seg_max >= 0)
    # the valid queries must be exactly those sitting on valid keys, all in that segment
    qcols = torch.arange(tk - tq, tk, device=key_mask.device)
    q_valid = qcols[None, :] >= (tk - n)[:, None]  # (B, Tq)
    expect = torch.where(q_valid, seg_max[:, None], torch.full_like(query_segment, -1))
    q_ok = (query_segment == expect).all(1)
    return suffix & one_seg & q_ok & (n > 0), n


def row_layout(mask: Tensor, segment: Tensor) -> RowLayout | None:
    """The :class:`RowLayout` of (B, T) tokens as their own keys, None unless every row is one
    segment on a contiguous suffix (or empty). Reads two (B,) tensors from the device: one sync."""
    query_segment = torch.where(mask, segment, torch.full_like(segment, -1))
    ok, n = _single_segment_rows(mask, segment, query_segment)
    flags, counts = torch.stack(((ok | (n == 0)).long(), n)).tolist()
    return RowLayout(tuple(counts)) if all(flags) else None


def _segment_runs(mask: Tensor, segment: Tensor) -> list[tuple[int, int, int]] | None:
    """(segment, start, end) runs of one row's valid keys; None if a segment is split or masked."""
    seg = torch.where(mask, segment, torch.full_like(segment, -1))
    values, counts = torch.unique_consecutive(seg, return_counts=True)
    runs: list[tuple[int, int, int]] = []
    start = 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if value >= 0:
            runs.append((value, start, start + count))
        start += count
    if len({r[0] for r in runs}) != len(runs):
        return None
    return runs


KEY_PIECE_MAX = 2048
"""Most keys one partial product of a decode step's P @ V covers (pieces of 256..2048 keys)."""


def _key_piece(tk: int) -> int:
    """Keys per piece of a decode step's P @ V: ``tk`` up to :data:`KEY_PIECE_MAX`, else the largest
    multiple of 256 up to KEY_PIECE_MAX that divides ``tk`` (static caches are whole 256-column
    blocks, so the pieces are views of the cache), else KEY_PIECE_MAX (a dynamic cache: the last,
    shorter piece runs on its own and the others are copied into one batch)."""
    if tk <= KEY_PIECE_MAX:
        return tk
    return next((c for c in range(KEY_PIECE_MAX, 255, -256) if tk % c == 0), KEY_PIECE_MAX)


def _bmm_float32(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for (N, m, k) x (N, k, n) -> (N, m, n) float32, accumulated in float32; half and
    bfloat16 inputs are not copied on CUDA (cuBLAS writes float32 directly)."""
    if a.dtype == torch.float32 or a.dtype == torch.float64:
        return torch.bmm(a, b)
    if a.is_cuda:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a.float(), b.float())


def single_query_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, key_segment: Tensor, query_segment: Tensor, scale: float
) -> Tensor:
    """One query per row that sees every key (decoding): no host sync, fixed shapes.

    q (B, Hq, 1, hd); k, v (B, Hkv, Tk, hd); key_mask, key_segment (B, Tk); query_segment (B, 1)
    -> (B, Hq, 1, hd). The query attends the real keys of its segment; a padding query (or one
    without keys) gets 0. The grouped heads of a key/value head are one (G, hd) block, so k and v
    are read once and never repeated.

    Two GEMMs around a float32 softmax, not one fused kernel: SDPA's masked kernel runs one block
    per (row, key/value head), 4-8 blocks on 132 SMs, each walking all 32k keys alone. Here the
    scores spread over the keys and P @ V is summed from pieces of up to :data:`KEY_PIECE_MAX`
    keys (a split-key reduction), so every SM has keys to read: on an H200 the 9B hybrid's
    CUDA-graph decode step after 32k tokens went from 9.3 to 6.5 ms (docs/benchmarks.md).
    """
    b, hq, _, hd = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = hq // hkv
    allowed = key_mask & (key_segment == query_segment) & (query_segment >= 0)  # (B, Tk)
    empty = ~allowed.any(-1)  # (B,)
    grouped = q.reshape(b * hkv, g, hd)  # query head h uses key/value head h // G
    scores = _bmm_float32(grouped, k.reshape(b * hkv, tk, hd).transpose(1, 2)).view(b, hkv, g, tk)
    scores = (scores * scale).masked_fill_(~allowed[:, None, None, :], float("-inf"))
    scores[..., 0].masked_fill_(empty[:, None, None], 0.0)  # a dummy key keeps the softmax finite
    probs = torch.softmax(scores, dim=-1).to(v.dtype)  # (B, Hkv, G, Tk)
    c = _key_piece(tk)
    main = tk - tk % c
    n = main // c
    # (B*Hkv*n, G, c) @ (B*Hkv*n, c, hd): one partial output per key piece, summed in float32
    p_main = probs[..., :main].unflatten(-1, (n, c)).transpose(2, 3).reshape(b * hkv * n, g, c)
    out = _bmm_float32(p_main, v[:, :, :main].reshape(b * hkv * n, c, hd)).view(b, hkv, n, g, hd).sum(2)
    if main < tk:
        tail = _bmm_float32(probs[..., main:].reshape(b * hkv, g, tk - main), v[:, :, main:].reshape(b * hkv, -1, hd))
        out += tail.view(b, hkv, g, hd)
    out = out.to(q.dtype).reshape(b, hq, 1, hd)
    return out.masked_fill(empty[:, None, None, None], 0.0)


def causal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor,
    key_segment: Tensor,
    query_segment: Tensor,
    scale: float,
    layout: RowLayout | None = None,
) -> Tensor:
    """Segment-aware causal attention; queries are the last Tq key positions.

    Args:
        q: (B, Hq, Tq, hd) queries; query i sits at key position Tk - Tq + i.
        k, v: (B, Hkv, Tk, hd); Hq must be a multiple of Hkv (grouped-query attention).
        key_mask: (B, Tk) bool, True on real keys.
        key_segment: (B, Tk) long segment ids, -1 on padding.
        query_segment: (B, Tq) long segment ids, -1 on padding queries.
        scale: softmax scale (usually hd ** -0.5).
        layout: what the caller knows of these keys (see :class:`RowLayout`); None = read it from
            the device (a host sync). A wrong layout gives wrong results: pass one only when known.

    Returns:
        (B, Hq, Tq, hd); query i attends keys j <= its position with key_mask[j] and
        key_segment[j] == query_segment[i]. Padding queries (and any query without a key) get 0.
    """
    b, hq, tq, _ = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    if hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if tq > tk:
        raise ValueError(f"more queries ({tq}) than keys ({tk}): queries must be the last Tq key positions")
    if tq == 1:
        return single_query_attention(q, k, v, key_mask, key_segment, query_segment, scale)
    if layout is not None and len(layout.lengths) != b:
        raise ValueError(f"layout describes {len(layout.lengths)} rows, the keys have {b}")
    if layout is not None and b > 0 and all(n == tk for n in layout.lengths):
        return _sdpa_suffix(q, k, v, scale)  # every row whole: no output buffer to fill and copy
    out = q.new_zeros(q.shape)  # (B, Hq, Tq, hd)
    if layout is not None:
        counts, ok_rows = list(layout.lengths), [n > 0 for n in layout.lengths]  # empty rows stay 0
    else:
        ok, n = _single_segment_rows(key_mask, key_segment, query_segment)
        flags, counts = torch.stack((ok.long(), n)).tolist()  # the one sync of the check
        ok_rows = [bool(x) for x in flags]

    # fast path: group single-segment rows by (valid keys, valid queries)
    groups: dict[int, list[int]] = {}
    for row, (row_ok, count) in enumerate(zip(ok_rows, counts, strict=True)):
        if row_ok:
            groups.setdefault(count, []).append(row)
    for count, rows_list in groups.items():
        nq = min(count, tq)
        if len(rows_list) == b:  # whole batch: plain slicing, no gather
            out[:, :, tq - nq :] = _sdpa_suffix(q[:, :, tq - nq :], k[:, :, tk - count :], v[:, :, tk - count :], scale)
        else:
            rows = torch.tensor(rows_list, device=q.device)
            res = _sdpa_suffix(q[rows, :, tq - nq :], k[rows, :, tk - count :], v[rows, :, tk - count :], scale)
            out[rows, :, tq - nq :] = res
    if layout is not None:
        return out

    rest = [row for row, row_ok in enumerate(ok_rows) if not row_ok]
    masked_rows: list[int] = []
    for row in rest:
        runs = _segment_runs(key_mask[row], key_segment[row])
        if runs is None:
            masked_rows.append(row)
            continue
        for value, start, end in runs:
            q_start = max(start, tk - tq)  # first query position inside this run
            if q_start >= end:
                continue  # the segment has no queries (it lies before the query window)
            qs = slice(q_start - (tk - tq), end - (tk - tq))
            if not bool((query_segment[row, qs] == value).all()):
                masked_rows.append(row)
                break
            one = slice(row, row + 1)
            out[one, :, qs] = _sdpa_suffix(q[one, :, qs], k[one, :, start:end], v[one, :, start:end], scale)
        else:
            # queries outside every run must be padding for the sliced result to be complete
            covered = torch.zeros(tq, dtype=torch.bool, device=q.device)
            for _, start, end in runs:
                covered[max(start - (tk - tq), 0) : max(end - (tk - tq), 0)] = True
            if bool((query_segment[row, ~covered] >= 0).any()):
                masked_rows.append(row)

    if masked_rows:
        rows = torch.tensor(masked_rows, device=q.device)
        allowed = allowed_keys(key_mask[rows], key_segment[rows], query_segment[rows])  # (N, Tq, Tk)
        out[rows] = masked_attention(q[rows], k[rows], v[rows], allowed, scale)
    return out
