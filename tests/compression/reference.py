"""Naive, loop-based references of the paper's dropping and transfer equations (test oracle).

Written per segment and per token with Python lists, independently of the vectorised code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_viper.sequence import SequenceState, TokenKind


def kept_count(keep: float, n_orig: int, n_now: int) -> int:
    """Round half up, clamp to what is present."""
    return min(max(math.floor(keep * n_orig + 0.5), 0), n_now)


def segment_columns(state: SequenceState) -> dict[int, tuple[int, list[int]]]:
    """segment -> (row, columns in order)."""
    out: dict[int, tuple[int, list[int]]] = {}
    for r in range(state.batch_size):
        for c in range(state.length):
            s = int(state.segment[r, c])
            if s >= 0:
                out.setdefault(s, (r, []))[1].append(c)
    return out


def kept_vision(state: SequenceState, keep: float, scores: Tensor | None) -> dict[int, list[int]]:
    """segment -> vision columns kept (uniform when ``scores`` is None, else top-k by score)."""
    out: dict[int, list[int]] = {}
    for s, (r, cols) in segment_columns(state).items():
        vis = [c for c in cols if int(state.kind[r, c]) == TokenKind.VISION]
        k = kept_count(keep, int(state.num_vision_orig[s]), len(vis))
        if scores is None:
            picked = [vis[math.floor((i + 0.5) * len(vis) / k)] for i in range(k)]
        else:
            ranked = sorted(vis, key=lambda c: (-float(scores[r, c]), c))
            picked = sorted(ranked[:k])
        out[s] = picked
    return out


def naive_drop(hidden: Tensor, state: SequenceState, kept: dict[int, list[int]]) -> dict[str, Tensor]:
    """Remove the non-kept vision tokens and left-pad again; returns hidden and state fields."""
    by_seg = segment_columns(state)
    rows: list[list[tuple[int, int]]] = [[] for _ in range(state.batch_size)]  # (column, position)
    for s in sorted(by_seg, key=lambda s: by_seg[s][1][0]):
        r, cols = by_seg[s]
        pos = 0
        for c in cols:
            if int(state.kind[r, c]) != TokenKind.VISION or c in kept[s]:
                rows[r].append((c, pos))
                pos += 1
    t = max(len(x) for x in rows)
    d = hidden.shape[-1]
    out = {
        "hidden": torch.zeros(state.batch_size, t, d, dtype=hidden.dtype),
        "mask": torch.zeros(state.batch_size, t, dtype=torch.bool),
        "kind": torch.zeros(state.batch_size, t, dtype=torch.long),
        "segment": torch.full((state.batch_size, t), -1),
        "position": torch.zeros(state.batch_size, t, dtype=torch.long),
        "origin": torch.full((state.batch_size, t), -1),
    }
    for r, toks in enumerate(rows):
        for j, (c, pos) in enumerate(toks):
            o = t - len(toks) + j
            out["hidden"][r, o] = hidden[r, c]
            out["mask"][r, o] = True
            out["kind"][r, o] = int(state.kind[r, c])
            out["segment"][r, o] = int(state.segment[r, c])
            out["position"][r, o] = pos
            out["origin"][r, o] = int(state.origin[r, c])
    return out


def rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return weight * (x / torch.sqrt((x * x).mean() + eps))


def naive_transfer(
    hidden: Tensor,
    state: SequenceState,
    kept: dict[int, list[int]],
    stage: torch.nn.Module,
    query_kinds: tuple[int, ...] = (TokenKind.INSTRUCTION,),
) -> Tensor:
    """X1 <- X1 + tanh(alpha) * CrossAttn(norm(X1), norm(X_dropped)), one query and one head at a time.

    ``query_kinds``: which tokens are X1; a stage without ``norm`` (the reference rule) uses raw inputs."""
    out = hidden.clone()
    hq, hkv, hd = stage.q_heads, stage.kv_heads, stage.head_dim
    norm = stage.norm
    gate = math.tanh(float(stage.alpha.detach()))

    def prenorm(x: Tensor) -> Tensor:
        return x if norm is None else rms(x, norm.weight, norm.eps)

    def lin(layer: torch.nn.Linear, x: Tensor) -> Tensor:
        y = layer.weight @ x
        return y + layer.bias if layer.bias is not None else y

    for s, (r, cols) in segment_columns(state).items():
        dropped = [c for c in cols if int(state.kind[r, c]) == TokenKind.VISION and c not in kept[s]]
        instr = [c for c in cols if int(state.kind[r, c]) in query_kinds]
        if not dropped:
            continue
        keys = [lin(stage.k_proj, prenorm(hidden[r, c])) for c in dropped]
        vals = [lin(stage.v_proj, prenorm(hidden[r, c])) for c in dropped]
        for c in instr:
            q = lin(stage.q_proj, prenorm(hidden[r, c]))
            heads = []
            for h in range(hq):
                g = h // (hq // hkv)
                qh = q[h * hd : (h + 1) * hd]
                logits = [float((qh @ kk[g * hd : (g + 1) * hd]).detach()) / math.sqrt(hd) for kk in keys]
                mx = max(logits)
                e = [math.exp(x - mx) for x in logits]
                z = sum(e)
                heads.append(sum((ei / z) * vv[g * hd : (g + 1) * hd] for ei, vv in zip(e, vals, strict=True)))
            o = lin(stage.o_proj, torch.cat(heads))
            out[r, c] = hidden[r, c] + gate * o
    return out
