"""``rule="reference"``: the TimeViper reference code's selection and transfer, against naive loops
of its rules (``int(keep * n)`` counts, ``linspace`` picks, pre-norm-free scores, no-norm transfer
querying every token after the video, init from the first attention layer at or after the stage)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones import NemotronHBackbone
from lightning_viper.compression import TokenDrop, TransV
from lightning_viper.compression.selection import kept_counts, select_vision
from lightning_viper.sequence import SequenceState, TokenKind

from .conftest import FakeBackbone, make_state
from .reference import naive_drop, naive_transfer, segment_columns


def reference_uniform(state: SequenceState, keep: float) -> dict[int, list[int]]:
    """segment -> kept vision columns: ``int(keep * n_orig)`` of them at ``linspace(0, n-1, k)``."""
    out: dict[int, list[int]] = {}
    for s, (r, cols) in segment_columns(state).items():
        vis = [c for c in cols if int(state.kind[r, c]) == TokenKind.VISION]
        k = min(int(keep * int(state.num_vision_orig[s])), len(vis))
        picks = torch.linspace(0, len(vis) - 1, k, dtype=torch.long).tolist() if k else []
        out[s] = [vis[j] for j in picks]
    return out


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.29, 0.5, 0.77, 1.0])
def test_kept_count_truncates(keep: float, state: SequenceState) -> None:
    got = kept_counts(state, keep, "reference").tolist()
    want = [min(int(keep * n), n) for n in state.num_vision_orig.tolist()]
    assert got == want


def test_kept_count_differs_from_round_half_up() -> None:
    st = make_state([[(1, 7, 2, 0)]])  # 0.5 * 7 = 3.5: reference keeps 3, ours 4
    assert kept_counts(st, 0.5, "reference").tolist() == [3]
    assert kept_counts(st, 0.5).tolist() == [4]


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.9])
def test_token_drop_uniform_matches_linspace(
    keep: float, hidden: Tensor, state: SequenceState, backbone: FakeBackbone
) -> None:
    stage = TokenDrop(layer=0, keep=keep, selector="uniform", rule="reference")
    stage.bind(backbone)
    out, new = stage(hidden, state, backbone)
    ref = naive_drop(hidden, state, reference_uniform(state, keep))
    torch.testing.assert_close(out, ref["hidden"], rtol=0, atol=0)
    for name in ("mask", "kind", "segment", "position", "origin"):
        assert torch.equal(getattr(new, name).long(), ref[name].long()), name


def test_linspace_picks_all_sizes() -> None:
    """Every (n, k) up to 40: the vectorised picks equal torch.linspace(0, n-1, k) truncated."""
    for n in range(1, 41):
        st = make_state([[(1, n, 2, 0)]])
        for k in range(1, n + 1):
            keep = (k + 0.5) / n if k < n else 1.0  # int(keep * n) == k
            mask, got_k = select_vision("uniform", 0, keep, torch.zeros(1, st.length, 4), st, None, "reference")  # type: ignore[arg-type]
            assert int(got_k) == k
            cols = torch.nonzero(mask[0] & st.vision_mask()[0]).flatten() - 1  # vision starts at column 1
            assert cols.tolist() == torch.linspace(0, n - 1, k, dtype=torch.long).tolist(), (n, k)


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.5])
def test_transv_reference_matches_naive(
    keep: float, hidden: Tensor, state: SequenceState, backbone: FakeBackbone
) -> None:
    backbone.double()
    stage = TransV(layer=1, keep=keep, selector="uniform", rule="reference")
    stage.bind(backbone)
    assert stage.norm is None and not any("norm" in k for k in stage.state_dict())
    with torch.no_grad():
        stage.alpha.fill_(0.7)
    out, new = stage(hidden, state, backbone)
    kept = reference_uniform(state, keep)
    queries = (int(TokenKind.INSTRUCTION), int(TokenKind.RESPONSE))  # all text after the video
    ref = naive_drop(naive_transfer(hidden, state, kept, stage, queries), state, kept)
    torch.testing.assert_close(out, ref["hidden"], rtol=1e-10, atol=1e-10)
    assert torch.equal(new.origin, ref["origin"])
    # responses really are queries: they moved, unlike with our rule
    resp = new.kind == TokenKind.RESPONSE
    plain = naive_drop(hidden, state, kept)["hidden"]
    if keep < 1.0:
        assert (out - plain)[resp].abs().sum() > 1e-3


def test_transv_reference_copies_first_attention_at_or_after(backbone: FakeBackbone) -> None:
    # layers: mamba, attention, mlp, decoder; stage at 2: ours copies 1 (nearest, earlier on a tie), reference 3
    ours = TransV(layer=2, keep=0.5)
    ours.bind(backbone)
    ref = TransV(layer=2, keep=0.5, rule="reference")
    ref.bind(backbone)
    assert torch.equal(ours.q_proj.weight, backbone.layers[1].attn.q_proj.weight)
    assert torch.equal(ref.q_proj.weight, backbone.layers[3].attn.q_proj.weight)
    assert torch.equal(ref.o_proj.weight, backbone.layers[3].attn.o_proj.weight)
    late = FakeBackbone(kinds=("attention", "mamba", "mlp"))
    with pytest.raises(ValueError, match="at or after layer 1"):
        TransV(layer=1, keep=0.5, rule="reference").bind(late)
    with pytest.raises(ValueError, match="rule must be one of"):
        TransV(layer=1, keep=0.5, rule="nope").bind(backbone)  # type: ignore[arg-type]


def naive_raw_scores(model: NemotronHBackbone, layer: int, hidden: Tensor, state: SequenceState) -> dict[int, Tensor]:
    """segment -> attention of its last instruction token over its vision tokens, from the layer's
    q/k projections on the RAW hidden states (no pre-norm), softmax over its causal past, head mean."""
    attn = model.attention_module(layer)
    hd, group = attn.head_dim, attn.num_heads // attn.num_kv_heads
    out: dict[int, Tensor] = {}
    for s, (r, cols) in segment_columns(state).items():
        instr = [c for c in cols if int(state.kind[r, c]) == TokenKind.INSTRUCTION]
        q_col = instr[-1]
        past = [c for c in cols if c <= q_col]
        q = attn.q_proj(hidden[r, q_col])
        probs = torch.zeros(len(past), dtype=torch.float64)
        for h in range(attn.num_heads):
            g = h // group
            logits = [
                float(q[h * hd : (h + 1) * hd] @ attn.k_proj(hidden[r, c])[g * hd : (g + 1) * hd]) / math.sqrt(hd)
                for c in past
            ]
            probs += torch.softmax(torch.tensor(logits, dtype=torch.float64), 0) / attn.num_heads
        out[s] = torch.stack([probs[i] for i, c in enumerate(past) if int(state.kind[r, c]) == TokenKind.VISION])
    return out


@torch.no_grad()
def test_attention_reference_scores_skip_the_norm() -> None:
    torch.manual_seed(0)
    model = NemotronHBackbone(pattern="M*-", hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=8, mamba_num_heads=4, mamba_head_dim=16, n_groups=1).double()  # fmt: skip
    model.block(1).norm.weight.mul_(torch.linspace(0.2, 3.0, 32, dtype=torch.float64))  # the norm matters
    st = make_state([[(2, 9, 3, 2)], [(1, 12, 2, 0)]])
    hidden = 3.0 * torch.randn(st.batch_size, st.length, 32, dtype=torch.float64) * st.mask[..., None]
    keep = 0.34
    mask, k = select_vision("attention", 1, keep, hidden, st, model, "reference")
    scores = naive_raw_scores(model, 1, hidden, st)
    for s, (r, cols) in segment_columns(st).items():
        vis = [c for c in cols if int(st.kind[r, c]) == TokenKind.VISION]
        kk = int(keep * len(vis))
        assert int(k[s]) == kk
        want = sorted(vis[i] for i in torch.topk(scores[s], kk).indices.tolist())
        assert [c for c in vis if bool(mask[r, c])] == want
    ours, _ = select_vision("attention", 1, keep, hidden, st, model)
    assert not torch.equal(ours, mask)  # the norm changes the ranking here: the rules differ
