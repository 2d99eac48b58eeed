"""ToMe projector: bipartite soft matching per frame down to a fixed token count, then the MLP.

One round of bipartite soft matching on ``n`` tokens (all frames at once):

1. split the tokens alternately into A (even places 0, 2, ...) and B (odd places 1, 3, ...);
2. similarity = the features split into ``num_heads`` heads, cosine per head, averaged over
   heads (equal to the dot product of per-head-normalised vectors divided by the head count);
3. every A token picks its most similar B token; the ``r = min(n - target, n // 2)`` A tokens
   with the highest such similarity are merged into their B match (ties: the earlier A token);
4. a merged token is the size-weighted mean of its members and its size is their total.

Rounds repeat until ``target`` tokens remain. Surviving tokens keep their original order (B
tokens stay where they were; merged A tokens disappear), so the output is still roughly in
raster order. Merging runs in float32 (or float64) and is cast back to the input dtype.

``rule="reference"`` follows the TimeViper reference code instead (for its checkpoints; ``viper
convert timeviper`` selects it): the similarity is ONE cosine of the head-averaged features (the
``num_heads`` slices of each feature averaged into one vector of width D / num_heads), and after
each round the unmerged A tokens come first, ordered by their best similarity (highest first),
then every B token in its original place order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_viper.compression.selection import Rule, check_rule
from lightning_viper.projectors.base import Projector
from lightning_viper.projectors.mlp import MLPHead


def head_similarity(a: Tensor, b: Tensor, num_heads: int) -> Tensor:
    """Mean over heads of per-head cosine similarity. a (F, Na, D), b (F, Nb, D) -> (F, Na, Nb)."""
    d = a.shape[-1]
    if d % num_heads:
        raise ValueError(f"feature width {d} is not divisible by num_heads={num_heads}")
    an = F.normalize(a.unflatten(-1, (num_heads, d // num_heads)), dim=-1).flatten(-2)  # (F, Na, D)
    bn = F.normalize(b.unflatten(-1, (num_heads, d // num_heads)), dim=-1).flatten(-2)  # (F, Nb, D)
    return (an @ bn.transpose(1, 2)) / num_heads


def merge_round(x: Tensor, sizes: Tensor, r: int, num_heads: int) -> tuple[Tensor, Tensor]:
    """One bipartite matching round merging ``r`` tokens. x (F, n, D), sizes (F, n) -> (F, n - r, ...)."""
    f, n, d = x.shape
    a_idx = torch.arange(0, n, 2, device=x.device)  # (Na,) places of A tokens
    b_idx = torch.arange(1, n, 2, device=x.device)  # (Nb,)
    sim = head_similarity(x[:, a_idx], x[:, b_idx], num_heads)  # (F, Na, Nb)
    best, match = sim.max(dim=-1)  # (F, Na): best B partner of each A token
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices  # (F, Na)
    src = order[:, :r]  # (F, r) A tokens (index into A) merged away
    dst = b_idx[match.gather(1, src)]  # (F, r) places of their B partners
    src_place = a_idx[src]  # (F, r)
    # mean of a group = x_b + sum_a s_a (x_a - x_b) / (s_b + sum_a s_a): exact for identical tokens
    x_src = x.gather(1, src_place.unsqueeze(-1).expand(f, r, d))  # (F, r, D)
    x_dst = x.gather(1, dst.unsqueeze(-1).expand(f, r, d))  # (F, r, D)
    s_src = sizes.gather(1, src_place)  # (F, r)
    delta = torch.zeros_like(x).scatter_add(1, dst.unsqueeze(-1).expand(f, r, d), (x_src - x_dst) * s_src[..., None])
    sizes = sizes.scatter_add(1, dst, s_src)  # (F, n)
    x = x + delta / sizes.unsqueeze(-1)
    removed = torch.zeros(f, n, dtype=torch.bool, device=x.device).scatter(1, src_place, True)  # (F, n)
    # stable sort puts the survivors first, in their original order (no host sync, unlike nonzero)
    keep = torch.sort(removed.to(torch.int32), dim=1, stable=True).indices[:, : n - r]  # (F, n - r)
    return x.gather(1, keep.unsqueeze(-1).expand(f, n - r, d)), sizes.gather(1, keep)


def merge_round_reference(x: Tensor, sizes: Tensor, r: int, num_heads: int) -> tuple[Tensor, Tensor]:
    """The reference rule's round (module docstring). x (F, n, D), sizes (F, n) -> (F, n - r, ...),
    ordered: unmerged A tokens by descending best similarity, then the B tokens."""
    f, _, d = x.shape
    if d % num_heads:
        raise ValueError(f"feature width {d} is not divisible by num_heads={num_heads}")
    metric = F.normalize(x.unflatten(-1, (num_heads, d // num_heads)).mean(-2), dim=-1)  # (F, n, D/h)
    best, match = (metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)).max(dim=-1)  # (F, Na)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices  # (F, Na)
    unmerged, src = order[:, r:], order[:, :r]  # (F, Na - r), (F, r) indices into A
    dst = match.gather(1, src)  # (F, r) indices into B
    weighted = x * sizes.unsqueeze(-1)  # merged token = sum(size * x) / sum(size)
    xa, xb, sa, sb = weighted[:, ::2], weighted[:, 1::2], sizes[:, ::2], sizes[:, 1::2]
    xb = xb.scatter_add(1, dst.unsqueeze(-1).expand(f, r, d), xa.gather(1, src.unsqueeze(-1).expand(f, r, d)))
    sb = sb.scatter_add(1, dst, sa.gather(1, src))
    keep_a = unmerged.unsqueeze(-1).expand(f, unmerged.shape[1], d)
    out_x = torch.cat([xa.gather(1, keep_a), xb], dim=1)  # (F, n - r, D)
    out_s = torch.cat([sa.gather(1, unmerged), sb], dim=1)  # (F, n - r)
    return out_x / out_s.unsqueeze(-1), out_s


def tome_merge(
    x: Tensor, sizes: Tensor | None, target: int, num_heads: int = 16, rule: Rule = "ours"
) -> tuple[Tensor, Tensor]:
    """Merge each frame's tokens down to ``target`` by repeated bipartite soft matching.

    Args:
        x: (F, P, D) token features. sizes: (F, P) how many original patches each token stands
            for (None = all ones). target: tokens to keep per frame (>= 1). num_heads: heads of
            the similarity metric (must divide D). rule: "ours" or "reference" (module docstring).

    Returns:
        (F, min(P, target), D) merged features (size-weighted means, input dtype) and their
        (F, min(P, target)) sizes (float, summing to the input's total per frame).
    """
    if target < 1:
        raise ValueError(f"ToMe target must be at least 1 token per frame, got {target}")
    work = torch.promote_types(x.dtype, torch.float32)
    out = x.to(work)
    s = torch.ones(x.shape[:2], dtype=work, device=x.device) if sizes is None else sizes.to(work)
    while out.shape[1] > target:
        n = out.shape[1]
        merge = merge_round if rule == "ours" else merge_round_reference
        out, s = merge(out, s, min(n - target, n // 2), num_heads)
    return out.to(x.dtype), s


class ToMeProjector(Projector):
    """Token merging to ``tokens_per_frame`` per frame, then Linear -> GELU -> Linear.

    Args:
        tokens_per_frame: tokens each frame keeps (TimeViper: 16 of 729 patches).
        num_heads: heads of the similarity metric (must divide the encoder width).
        rule: ``"ours"`` or ``"reference"`` (the TimeViper reference's similarity and token order,
            see the module docstring).

    Call :meth:`bind` (``VideoLM`` does) before use. (F, P, Dv) -> (F, N, D).
    """

    def __init__(self, tokens_per_frame: int = 16, num_heads: int = 16, rule: Rule = "ours") -> None:
        super().__init__()
        check_rule("ToMeProjector", rule)
        self.rule = rule
        if tokens_per_frame < 1:
            raise ValueError(f"tokens_per_frame must be at least 1, got {tokens_per_frame}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be at least 1, got {num_heads}")
        self.num_tokens = tokens_per_frame
        self.num_heads = num_heads
        self.mlp: MLPHead | None = None

    def describe(self) -> str:
        rule = "" if self.rule == "ours" else f", rule={self.rule}"
        return f"ToMe(tokens_per_frame={self.num_tokens}{rule})"

    def bind(self, vision_dim: int, llm_dim: int) -> None:
        if vision_dim % self.num_heads:
            raise ValueError(
                f"ToMeProjector: vision width {vision_dim} is not divisible by num_heads={self.num_heads}; "
                "pick num_heads dividing it"
            )
        if self.mlp is not None:
            if (self.mlp.fc1.in_features, self.mlp.fc2.out_features) != (vision_dim, llm_dim):
                raise ValueError(
                    f"ToMeProjector is already bound to other widths; cannot rebind to ({vision_dim}, {llm_dim})"
                )
            return
        self.mlp = MLPHead(vision_dim, llm_dim)

    def tokens_per_frame(self, num_patches: int) -> int:
        return min(self.num_tokens, num_patches)

    def forward(self, features: Tensor) -> Tensor:
        """(F, P, Dv) -> (F, min(P, tokens_per_frame), D)."""
        if self.mlp is None:
            raise RuntimeError("ToMeProjector: call bind(vision_dim, llm_dim) before use (VideoLM does this)")
        merged, _ = tome_merge(features, None, self.num_tokens, self.num_heads, self.rule)
        out: Tensor = self.mlp(merged)
        return out
