"""Attention scores of chosen query tokens at one attention layer, for attention-guided compression."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_viper.backbones.attention import AttentionLayer
from lightning_viper.ops.pieces import slices
from lightning_viper.sequence import SequenceState

QUERY_CHUNK = 16  # query tokens scored at once: (B, Hq, 16, T) float32 logits
KEY_PIECE = 65_536  # tokens normed and projected to keys at a time


@torch.no_grad()
def query_attention(
    view: AttentionLayer, hidden: Tensor, state: SequenceState, queries: Tensor | None, pre_norm: bool = True
) -> Tensor:
    """(B, T) float32: head-averaged softmax attention of the ``queries`` (B, T) bool tokens
    (None = each segment's ``state.query_index()``) over the causal keys of their own segment,
    from ``view``'s pre-norm (skipped with ``pre_norm=False``, the TimeViper reference's rule) and
    (rotary) q/k projections on ``hidden`` (B, T, D), averaged over the query tokens of each
    segment; 0 elsewhere. Vectorised over rows, segments, queries and heads; keys are projected once."""
    attn = view.attention
    if queries is None:
        queries = torch.zeros_like(state.mask)
        queries[state.segment_row, state.query_index()] = True
    queries = queries & state.mask
    b, t = state.mask.shape
    out = torch.zeros(b, t, dtype=torch.float32, device=hidden.device)
    count = queries.sum(1)  # (B,)
    width = int(count.max()) if b else 0
    if width == 0:
        return out

    def prepared(h: Tensor) -> Tensor:  # what the projections read: the layer's pre-norm of h (or h)
        return view.norm(h.to(view.norm.weight.dtype)) if pre_norm else h.to(attn.q_proj.weight.dtype)

    # keys once for every query, normed and projected KEY_PIECE tokens at a time: no normed copy
    # of the whole sequence (6.8 GiB at TransV's second stage of a 102,400-frame prefill)
    k = torch.empty(b, attn.num_kv_heads, t, attn.head_dim, dtype=torch.float32, device=hidden.device)
    for p in slices(t, KEY_PIECE):
        k[:, :, p] = attn.key(prepared(hidden[:, p]), state.position[:, p])  # (B, Hkv, piece, hd)
    rows, cols = queries.nonzero(as_tuple=True)  # (Q,) row-major: in sequence order per row
    slot = (queries.cumsum(1) - 1)[rows, cols]  # (Q,) place of each query in its row
    qcol = torch.full((b, width), t - 1, dtype=torch.long, device=hidden.device)  # (B, W)
    qcol[rows, slot] = cols
    valid = torch.arange(width, device=hidden.device)[None, :] < count[:, None]  # (B, W)
    per_segment = torch.bincount(state.segment[queries], minlength=state.num_segments)  # (S,)
    qseg = state.segment.gather(1, qcol)  # (B, W)
    weight = torch.where(valid, 1.0 / per_segment[qseg.clamp(min=0)].clamp(min=1).float(), 0.0)  # (B, W)
    xq = prepared(hidden.gather(1, qcol[..., None].expand(b, width, hidden.shape[-1])))  # (B, W, D)
    q = attn.query(xq, state.position.gather(1, qcol)).float()  # (B, Hq, W, hd)
    group = attn.num_heads // attn.num_kv_heads
    q = q.view(b, attn.num_kv_heads, group, width, attn.head_dim)  # (B, Hkv, G, W, hd)
    key_cols = torch.arange(t, device=hidden.device)
    for s in range(0, width, QUERY_CHUNK):
        e = min(s + QUERY_CHUNK, width)
        logits = torch.einsum("bkgqd,bktd->bkgqt", q[:, :, :, s:e], k) * attn.scale  # (B, Hkv, G, c, T)
        allowed = (
            state.mask[:, None, :]
            & (state.segment[:, None, :] == qseg[:, s:e, None])
            & (key_cols[None, None, :] <= qcol[:, s:e, None])
            & valid[:, s:e, None]
        )  # (B, c, T)
        probs = logits.masked_fill(~allowed[:, None, None], -math.inf).softmax(-1).mean(dim=(1, 2))  # (B, c, T)
        out += (probs.masked_fill(~allowed, 0.0) * weight[:, s:e, None]).sum(1)
    return out
