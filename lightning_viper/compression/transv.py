"""TransV: drop vision tokens and transfer what they carry into the instruction tokens.

Before layer ``l`` the vision tokens of each segment are split into kept and dropped ones (same
rule as :class:`~lightning_viper.compression.token_drop.TokenDrop`); the instruction tokens X1
of that segment then absorb the dropped ones X0d through a gated cross-attention::

    X1_new = X1 + tanh(alpha) * O( softmax(Q K^T / sqrt(hd)) V )
    Q = norm(X1) Wq,  K = norm(X0d) Wk,  V = norm(X0d) Wv     (per head, grouped-query allowed)

``alpha`` is one learnable scalar initialised to 0, so a fresh TransV behaves exactly like plain
dropping. The projections are shaped like the backbone's attention layers and, with
``init_from_attention``, start as copies of the nearest attention layer's q/k/v/o weights and
pre-norm weight. There are no positions (no rotary) in this cross-attention.

``rule: "reference"`` follows the TimeViper reference code instead, for models trained with it
(``viper convert timeviper`` selects it): the selection conventions of
:mod:`~lightning_viper.compression.selection` (``int(keep * n)`` counts, ``linspace`` picks,
pre-norm-free scores); no ``norm`` (Q = X1 Wq, K = X0d Wk, V = X0d Wv); the queries are ALL tokens
after the video, response tokens included in training (instruction tokens only in generation);
and ``init_from_attention`` copies the first attention layer at or after ``layer`` (q/k/v/o).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_viper.backbones.attention import AttentionLayer
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.selection import (
    Rule,
    Selector,
    check_rule,
    check_selector,
    kept_counts,
    pad_by_segment,
    select_dropping,
)
from lightning_viper.ops.attention import masked_attention
from lightning_viper.sequence import SequenceState, TokenKind, compact

if TYPE_CHECKING:
    from lightning_viper.backbones.base import Backbone


def nearest_attention_layer(backbone: Backbone, layer: int) -> int | None:
    """The attention layer closest to ``layer`` (the earlier one on a tie), None if there is none."""
    attn = backbone.attention_layers
    return min(attn, key=lambda i: (abs(i - layer), i)) if attn else None


def next_attention_layer(backbone: Backbone, layer: int) -> int | None:
    """The first attention layer at or after ``layer`` (the reference's choice), None if there is none."""
    return next((i for i in backbone.attention_layers if i >= layer), None)


class TransV(CompressionStage):
    """Token transfer stage (TimeViper's TransV).

    Args:
        layer: index of the layer the stage runs before.
        keep: fraction of the ORIGINAL vision tokens kept (see ``selection`` for rounding).
        selector: ``"uniform"`` or ``"attention"`` (needs ``layer`` to be an attention layer).
        init_from_attention: copy q/k/v/o and the pre-norm weight from the attention layer
            nearest to ``layer`` at bind time.
        num_heads: heads of the cross-attention. None = the backbone attention's shape (query
            and key/value heads, head dim); an int = that many heads of width D / num_heads
            (then ``init_from_attention`` requires it to equal the backbone's head count).
        rule: ``"ours"`` (default) or ``"reference"`` (the TimeViper reference code's rules, see
            the module docstring).

    All parameters (``alpha``, ``norm`` (``"ours"`` only), ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) live in
    this module, so ``model.compression.parameters()`` is the TransV optimizer group.
    """

    def __init__(
        self,
        layer: int,
        keep: float,
        selector: Selector = "uniform",
        init_from_attention: bool = True,
        num_heads: int | None = None,
        rule: Rule = "ours",
    ) -> None:
        super().__init__(layer, keep)
        self.selector = selector
        self.rule = rule
        self.norm: RMSNorm | None = None
        self.init_from_attention = init_from_attention
        self.num_heads = num_heads
        self.alpha = nn.Parameter(torch.zeros(()))
        self.q_heads = 0  # set by bind: query heads, key/value heads, head dim
        self.kv_heads = 0
        self.head_dim = 0
        self._bound = False

    @property
    def requires_attention_layer(self) -> bool:
        return self.selector == "attention"

    def bind(self, backbone: Backbone) -> None:
        """Check the layer and selector, then build (and optionally copy) the cross-attention."""
        super().bind(backbone)
        check_selector(self.describe(), self.selector)
        check_rule(self.describe(), self.rule)
        if self._bound:
            return
        nearest = nearest_attention_layer(backbone, self.layer)
        src = nearest if self.rule == "ours" else next_attention_layer(backbone, self.layer)
        if src is None and self.init_from_attention and nearest is not None:
            raise ValueError(
                f"{self.describe()}: init_from_attention (reference rule) copies the first attention layer at "
                f"or after layer {self.layer}, and there is none (attention layers: {backbone.attention_layers}); "
                "set init_from_attention: false"
            )
        view = backbone.attention_layer(src if src is not None else nearest) if nearest is not None else None
        d = backbone.hidden_size
        if self.num_heads is None:
            if view is None:
                raise ValueError(f"{self.describe()}: the backbone has no attention layer; set num_heads")
            hq, hkv, hd = view.num_heads, view.num_kv_heads, view.head_dim
        else:
            if d % self.num_heads != 0:
                raise ValueError(f"{self.describe()}: hidden size {d} is not divisible by num_heads={self.num_heads}")
            hq, hkv, hd = self.num_heads, self.num_heads, d // self.num_heads
        if self.init_from_attention:
            if view is None:
                raise ValueError(
                    f"{self.describe()}: init_from_attention needs an attention layer, the backbone has none; "
                    "set init_from_attention: false"
                )
            if (hq, hkv, hd) != (view.num_heads, view.num_kv_heads, view.head_dim):
                raise ValueError(
                    f"{self.describe()}: num_heads={self.num_heads} does not match attention layer {src} "
                    f"({view.num_heads} heads); drop num_heads or set init_from_attention: false"
                )
        ref = next(backbone.parameters())
        kw: dict[str, Any] = {"device": ref.device, "dtype": ref.dtype}
        bias_qkv = view is not None and view.attention.q_proj.bias is not None
        bias_o = view is not None and view.attention.o_proj.bias is not None
        self.q_heads, self.kv_heads, self.head_dim = hq, hkv, hd
        self.q_proj = nn.Linear(d, hq * hd, bias=bias_qkv, **kw)
        self.k_proj = nn.Linear(d, hkv * hd, bias=bias_qkv, **kw)
        self.v_proj = nn.Linear(d, hkv * hd, bias=bias_qkv, **kw)
        self.o_proj = nn.Linear(hq * hd, d, bias=bias_o, **kw)
        self.alpha = nn.Parameter(self.alpha.detach().to(**kw))  # same device/dtype as the rest
        if self.rule == "ours":
            self.norm = RMSNorm(d, view.eps if view is not None else 1e-6).to(**kw)
        if self.init_from_attention and view is not None:
            self._copy_from(view)
        self._bound = True

    @torch.no_grad()
    def _copy_from(self, view: AttentionLayer) -> None:
        for name, theirs in view.projections().items():
            mine = getattr(self, name)
            mine.weight.copy_(theirs.weight)
            if mine.bias is not None:
                mine.bias.copy_(theirs.bias)
        if self.norm is not None:
            self.norm.weight.copy_(view.norm_weight)

    def transfer_update(self, hidden: Tensor, state: SequenceState, dropped: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The gated cross-attention from each segment's ``dropped`` (B, T) tokens to its instruction
        tokens (reference rule: every token after the video, responses included): (rows, cols) of
        the updated tokens in ``hidden`` (B, T, D) and their (Nq, D) update, to be added. Segments
        with no dropped or no query tokens get a zero update."""
        instr = state.instruction_mask()
        if self.rule == "reference":
            instr = instr | (state.kind == TokenKind.RESPONSE)
        instr = instr & state.mask
        queries, q_valid, q_rank = pad_by_segment(hidden, state, instr)  # (S, M, D)
        keys, k_valid, _ = pad_by_segment(hidden, state, dropped)  # (S, N, D)
        s, m, _ = queries.shape
        n = keys.shape[1]
        xq = self.norm(queries) if self.norm is not None else queries
        q = self.q_proj(xq).view(s, m, self.q_heads, self.head_dim).transpose(1, 2)  # (S, Hq, M, hd)
        k, v = self._keys_values(keys)  # (S, N, Hkv * hd) each
        del keys
        k = k.view(s, n, self.kv_heads, self.head_dim).transpose(1, 2)  # (S, Hkv, N, hd)
        v = v.view(s, n, self.kv_heads, self.head_dim).transpose(1, 2)
        allowed = q_valid[:, :, None] & k_valid[:, None, :]  # (S, M, N)
        out = masked_attention(q, k, v, allowed, self.head_dim**-0.5)  # (S, Hq, M, hd)
        out = self.o_proj(out.transpose(1, 2).reshape(s, m, self.q_heads * self.head_dim))  # (S, M, D)
        out = out * k_valid.any(1)[:, None, None].to(out.dtype)  # no keys -> no update (o_proj bias)
        sel = q_rank >= 0
        rows, cols = sel.nonzero(as_tuple=True)
        update = out[state.segment[sel], q_rank[sel]]  # (Nq, D)
        return rows, cols, torch.tanh(self.alpha).to(hidden.dtype) * update

    _KV_CHUNK = 65536  # dropped tokens normed and projected at a time without autograd

    def _keys_values(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """(S, N, D) dropped tokens -> their K and V projections (S, N, Hkv * hd). Without autograd
        the norm and projections run over pieces of the tokens, so no normed (S, N, D) copy exists."""
        s, n, _ = keys.shape
        if torch.is_grad_enabled() or s * n <= self._KV_CHUNK:
            xk = self.norm(keys) if self.norm is not None else keys
            return self.k_proj(xk), self.v_proj(xk)
        width = self.kv_heads * self.head_dim
        k = keys.new_empty(s, n, width)
        v = keys.new_empty(s, n, width)
        step = max(1, self._KV_CHUNK // s)
        for start in range(0, n, step):
            piece = keys[:, start : start + step]
            xk = self.norm(piece) if self.norm is not None else piece
            k[:, start : start + step] = self.k_proj(xk)
            v[:, start : start + step] = self.v_proj(xk)
        return k, v

    def forward(self, hidden: Tensor, state: SequenceState, backbone: Backbone) -> tuple[Tensor, SequenceState]:
        """(B, T, D) -> (B, T', D): instruction tokens updated, dropped vision tokens removed.

        The dropped tokens are removed first and the instruction tokens updated in the compacted
        tensor (their own fresh copy), so the stage never copies the whole (B, T, D) sequence
        twice (the peak of a 100k-frame prefill)."""
        if not self._bound:
            raise RuntimeError(f"{self.describe()}: call bind(backbone) before use (VideoLM does this)")
        k = kept_counts(state, self.keep, self.rule)
        keep_mask = select_dropping(self.selector, self.layer, k, hidden, state, backbone, self.rule)
        if keep_mask is None:
            return hidden, state
        dropped = state.vision_mask() & state.mask & ~keep_mask
        rows, cols, delta = self.transfer_update(hidden, state, dropped)
        kept = keep_mask & state.mask
        out, new_state = compact(hidden, state, kept)
        counts = kept.sum(1, keepdim=True)  # (B, 1)
        new_col = out.shape[1] - counts + kept.cumsum(1) - 1  # (B, T): each kept token's column after compaction
        new_cols = new_col[rows, cols]  # the updated tokens are instruction tokens: always kept
        out.index_put_((rows, new_cols), out[rows, new_cols] + delta)  # in place: ``out`` is compact's fresh tensor
        return out, new_state

    def describe(self) -> str:
        rule = "" if self.rule == "ours" else f", rule={self.rule}"
        return f"TransV(layer={self.layer}, keep={self.keep}, selector={self.selector}{rule})"
