"""splice() against a naive per-sample construction of the spliced sequence."""

import torch

from lightning_viper.sequence import TokenKind, compact
from lightning_viper.splice import splice

PH = 99


def naive(text, ids, lengths, prompt_lengths, vision_per_sample):
    rows, kinds = [], []
    for b in range(ids.shape[0]):
        seq, kind = [], []
        for j in range(int(lengths[b])):
            if ids[b, j] == PH:
                for v in vision_per_sample[b]:
                    seq.append(v)
                    kind.append(TokenKind.VISION)
                seen = True
            else:
                seen = any(ids[b, :j] == PH)
                seq.append(text[b, j])
                if not seen:
                    kind.append(TokenKind.TEXT)
                elif j < prompt_lengths[b]:
                    kind.append(TokenKind.INSTRUCTION)
                else:
                    kind.append(TokenKind.RESPONSE)
        rows.append(seq)
        kinds.append(kind)
    t = max(len(r) for r in rows)
    hidden = torch.zeros(len(rows), t, text.shape[-1])
    kind_t = torch.zeros(len(rows), t, dtype=torch.long)
    for b, (r, k) in enumerate(zip(rows, kinds, strict=True)):
        hidden[b, t - len(r) :] = torch.stack(r)
        kind_t[b, t - len(k) :] = torch.tensor([int(x) for x in k])
    return hidden, kind_t


def test_splice_matches_naive_construction():
    torch.manual_seed(0)
    ids = torch.tensor([[5, PH, 6, 7, 8, 9, 0], [PH, 3, 4, 0, 0, 0, 0], [1, 2, PH, 3, 4, 5, 6]])
    lengths = torch.tensor([6, 3, 7])
    prompt_lengths = torch.tensor([4, 2, 5])
    text = torch.randn(3, 7, 8)
    per_sample = torch.tensor([5, 2, 3])
    vision = torch.randn(int(per_sample.sum()), 8)
    hidden, state, source = splice(text, ids, lengths, prompt_lengths, vision, per_sample, PH)
    split = list(vision.split(per_sample.tolist()))
    ref_hidden, ref_kind = naive(text, ids, lengths, prompt_lengths, split)
    torch.testing.assert_close(hidden, ref_hidden, rtol=0, atol=0)
    assert torch.equal(state.kind, ref_kind)
    assert torch.equal(state.mask, ref_kind != TokenKind.PAD)
    assert state.num_vision().tolist() == per_sample.tolist()
    # positions count real tokens from 0 in each row
    for b in range(3):
        real = state.position[b][state.mask[b]]
        assert real.tolist() == list(range(int(state.mask[b].sum())))
    # source points at the text column of every text token
    for b in range(3):
        for t in range(hidden.shape[1]):
            if source[b, t] >= 0:
                torch.testing.assert_close(hidden[b, t], text[b, source[b, t]])
    # the query token is the last instruction token
    q = state.query_index()
    for b in range(3):
        instr = torch.nonzero(state.kind[b] == TokenKind.INSTRUCTION).flatten()
        assert q[b] == instr[-1]


def test_splice_rejects_rows_without_one_placeholder():
    ids = torch.tensor([[1, 2, 3]])
    try:
        splice(
            torch.zeros(1, 3, 4), ids, torch.tensor([3]), torch.tensor([3]), torch.zeros(0, 4), torch.tensor([0]), PH
        )
    except ValueError as err:
        assert "exactly one" in str(err)
    else:
        raise AssertionError("a row without a placeholder must be rejected")


def test_compact_keeps_order_and_left_pads():
    torch.manual_seed(1)
    ids = torch.tensor([[PH, 3, 4], [1, PH, 2]])
    per_sample = torch.tensor([4, 6])
    hidden, state, _ = splice(
        torch.randn(2, 3, 4), ids, torch.tensor([3, 3]), torch.tensor([3, 3]), torch.randn(10, 4), per_sample, PH
    )
    keep = ~state.vision_mask() | (state.position % 2 == 0)
    out, new = compact(hidden, state, keep)
    for b in range(2):
        expect = hidden[b][keep[b] & state.mask[b]]
        got = out[b][new.mask[b]]
        torch.testing.assert_close(got, expect)
        assert bool(new.mask[b, -1])  # left padded: the last column is real
        assert new.position[b][new.mask[b]].tolist() == list(range(int(new.mask[b].sum())))
    assert torch.equal(new.num_vision_orig, state.num_vision_orig)
