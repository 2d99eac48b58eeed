"""Per-head mixing matrices of every token-mixing layer, their shares and a head classification.

A layer's matrix W[h, i, j] says how much query token i takes from key token j in head h:

* attention layers: the softmax probabilities (rows sum to 1);
* Mamba-2 layers: the SSD matrix M[i, j] = (C_i . B_j) exp(cumA_i - cumA_j) Δ_j
  (:mod:`.ssd_form`; signed, rows not normalised). Shares and classes use |M| normalised per
  row, so both kinds read as "fraction of what query i takes from key j".

Statistics are taken over the text queries after the video (INSTRUCTION and RESPONSE tokens),
averaged over all of them in the eval set:

* shares: for instruction queries and for response queries, the fraction of each head's row
  mass on vision / instruction / other keys (other = text before the video and response keys);
* local mass: fraction on the query's ``window`` most recent keys (itself included);
* k90 fraction: fewest keys holding 90% of the row's mass, divided by the keys it may see.

Head classes, in this order: **local** if the mean local mass >= ``local_mass`` (default 0.5);
else **sparse** if the mean k90 fraction <= ``sparse_fraction`` (default 0.1: 90% of the mass
on at most a tenth of the visible keys, not the recent ones); else **global** (mass spread
over the sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_viper.analysis.mixers import allowed_attention
from lightning_viper.analysis.ssd_form import MATRIX_ELEMENTS, ssd_matrix
from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.sequence import SequenceState, TokenKind

HeadClass = Literal["local", "sparse", "global"]
QUERY_KINDS = {"instruction": TokenKind.INSTRUCTION, "response": TokenKind.RESPONSE}
KEY_GROUPS = ("vision", "instruction", "other")


@dataclass(frozen=True)
class ClassRule:
    """The head classification's thresholds (see the module docstring)."""

    window: int = 8
    local_mass: float = 0.5
    sparse_fraction: float = 0.1

    def classify(self, local: float, k90: float) -> HeadClass:
        if local >= self.local_mass:
            return "local"
        if k90 <= self.sparse_fraction:
            return "sparse"
        return "global"


def layer_weights(mixer: nn.Module, x: Tensor, state: SequenceState, rows: slice) -> Tensor:
    """(B, H, Lq, T) float32 matrix rows ``rows`` of the layer with normed input x (B, T, D):
    softmax probabilities of a GQAttention, the SSD matrix (with Δ) of a Mamba2Mixer."""
    if isinstance(mixer, Mamba2Mixer):
        inp = mixer.ssd_inputs(x, state.mask, state.segment)
        return ssd_matrix(inp, state.segment, rows)
    if isinstance(mixer, GQAttention):
        q = mixer.query(x[:, rows], state.position[:, rows]).float()  # (B, Hq, Lq, hd)
        k = mixer.key(x, state.position).float()  # (B, Hkv, T, hd)
        k = k.repeat_interleave(mixer.num_heads // mixer.num_kv_heads, dim=1)  # (B, Hq, T, hd)
        allowed = allowed_attention(state)[:, rows]  # (B, Lq, T)
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * mixer.scale
        probs = logits.masked_fill(~allowed[:, None], -math.inf).softmax(-1)
        return torch.nan_to_num(probs, nan=0.0)  # padding queries see no key
    raise TypeError(f"no mixing matrix for a {type(mixer).__name__}")


def normalised(w: Tensor) -> Tensor:
    """|W| with every row scaled to sum 1 (rows of zeros stay zero)."""
    a = w.abs()
    return a / a.sum(-1, keepdim=True).clamp(min=1e-30)


@dataclass
class LayerStats:
    """Running sums over text queries of one layer (per head)."""

    kind: str
    heads: int
    share: dict[str, Tensor] = field(default_factory=dict)  # query kind -> (H, 3) summed shares
    count: dict[str, int] = field(default_factory=dict)  # query kind -> queries seen
    local: Tensor | None = None  # (H,) summed local mass
    k90: Tensor | None = None  # (H,) summed k90 fractions
    queries: int = 0

    def add(self, w: Tensor, state: SequenceState, rows: slice, window: int) -> None:
        """Accumulate rows ``rows`` of the (B, H, Lq, T) matrix ``w``."""
        a = normalised(w)  # (B, H, Lq, T)
        t = state.length
        kind = state.kind
        qkind = kind[:, rows]  # (B, Lq)
        groups = torch.stack(
            [kind == TokenKind.VISION, kind == TokenKind.INSTRUCTION, ~((kind == TokenKind.VISION) |
             (kind == TokenKind.INSTRUCTION))], -1
        ).float()  # (B, T, 3)  # fmt: skip
        share = torch.einsum("bhqk,bkg->bqhg", a, groups)  # (B, Lq, H, 3)
        for name, value in QUERY_KINDS.items():
            sel = qkind == value  # (B, Lq)
            self.share[name] = self.share.get(name, torch.zeros(self.heads, 3)) + share[sel].sum(0).cpu()
            self.count[name] = self.count.get(name, 0) + int(sel.sum())
        text = (qkind == TokenKind.INSTRUCTION) | (qkind == TokenKind.RESPONSE)  # (B, Lq)
        qpos = torch.arange(t, device=w.device)[rows]  # (Lq,)
        kpos = torch.arange(t, device=w.device)
        recent = (kpos[None, :] > qpos[:, None] - window) & (kpos[None, :] <= qpos[:, None])  # (Lq, T)
        local = (a * recent).sum(-1)  # (B, H, Lq)
        visible = allowed_attention(state)[:, rows].sum(-1).clamp(min=1)  # (B, Lq)
        ranked = a.sort(-1, descending=True).values.cumsum(-1)  # (B, H, Lq, T)
        k90 = ((ranked < 0.9).sum(-1) + 1).float() / visible[:, None].float()  # (B, H, Lq)
        pick = text[:, None].expand_as(local)  # (B, H, Lq)
        zero = torch.zeros(self.heads)
        self.local = (self.local if self.local is not None else zero) + (local * pick).sum((0, 2)).cpu()
        self.k90 = (self.k90 if self.k90 is not None else zero) + (k90.clamp(max=1.0) * pick).sum((0, 2)).cpu()
        self.queries += int(text.sum())

    def summary(self, index: int, rule: ClassRule) -> dict[str, Any]:
        if self.queries == 0 or self.local is None or self.k90 is None:
            raise ValueError(f"layer {index}: no instruction or response queries seen")
        local = (self.local / self.queries).tolist()
        k90 = (self.k90 / self.queries).tolist()
        shares = {
            name: dict(zip(KEY_GROUPS, (self.share[name].mean(0) / self.count[name]).tolist(), strict=True))
            for name in QUERY_KINDS
            if self.count.get(name, 0) > 0
        }
        to_vision = (
            self.share.get("instruction", torch.zeros(self.heads, 3))[:, 0] / max(1, self.count.get("instruction", 0))
        ).tolist()
        heads = [
            {
                "head": h,
                "local_mass": local[h],
                "k90_fraction": k90[h],
                "instruction_to_vision": to_vision[h],
                "class": rule.classify(local[h], k90[h]),
            }
            for h in range(self.heads)
        ]
        return {"layer": index, "kind": self.kind, "shares": shares, "heads": heads}


def text_rows(state: SequenceState) -> slice:
    """The last columns holding every row's instruction and response tokens (they end each row)."""
    text = (state.kind == TokenKind.INSTRUCTION) | (state.kind == TokenKind.RESPONSE)
    cols = torch.arange(state.length, device=text.device).expand_as(text)
    first = int(torch.where(text, cols, state.length).amin()) if bool(text.any()) else state.length
    return slice(first, state.length)


class MapRecorder:
    """A ``MixerOverride`` that runs each layer normally and accumulates its matrix statistics."""

    def __init__(self, kinds: tuple[str, ...], window: int) -> None:
        self.kinds, self.window = kinds, window
        self.stats: dict[int, LayerStats] = {}

    def __call__(self, index: int, mixer: nn.Module, x: Tensor, state: SequenceState) -> Tensor:
        rows = text_rows(state)
        w = layer_weights(mixer, x, state, rows)  # (B, H, Lq, T)
        stats = self.stats.setdefault(index, LayerStats(self.kinds[index], int(w.shape[1])))
        stats.add(w, state, rows, self.window)
        out: Tensor = mixer(x, state.mask, state.segment, None, state.position)
        return out


class HeadCapture:
    """A ``MixerOverride`` that keeps the full (T, T) matrix of chosen heads of the batch's first row."""

    def __init__(self, heads: dict[int, list[int]]) -> None:
        self.heads = heads  # layer -> heads
        self.matrices: dict[tuple[int, int], Tensor] = {}
        self.kinds: dict[int, Tensor] = {}  # layer -> (T,) token kinds of row 0 there

    def __call__(self, index: int, mixer: nn.Module, x: Tensor, state: SequenceState) -> Tensor:
        heads, t = self.heads.get(index, []), state.length
        if heads:
            one = _first_row(state)
            step = max(1, MATRIX_ELEMENTS // (int(getattr(mixer, "num_heads", 1)) * t))
            pieces = [layer_weights(mixer, x[:1], one, slice(s, min(s + step, t)))[0, heads].cpu()
                      for s in range(0, t, step)]  # fmt: skip
            full = torch.cat(pieces, 1)  # (len(heads), T, T)
            for i, h in enumerate(heads):
                self.matrices[(index, h)] = full[i]
        self.kinds[index] = state.kind[0].cpu()
        out: Tensor = mixer(x, state.mask, state.segment, None, state.position)
        return out


def _first_row(state: SequenceState) -> SequenceState:
    """The state of row 0 alone (its segments keep their ids; only masks and kinds are read)."""
    return replace(
        state,
        mask=state.mask[:1],
        kind=state.kind[:1],
        segment=state.segment[:1],
        position=state.position[:1],
        origin=state.origin[:1],
    )
