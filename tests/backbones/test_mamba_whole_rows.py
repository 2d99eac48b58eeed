"""The Mamba-2 mixer's whole-row path: rows of one unpadded segment skip masks and run labels.

The backbone's ``RowLayout`` tells each layer, without a sync, whether every row's columns are
real tokens of one segment. Only then may the mixer drop the mask products and the scan's run
labels; a padded or packed row must keep them. The scan and conv are spied on to see which path
ran, and every path must give the outputs of the sequences run on their own.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lightning_viper.backbones import mamba2
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.ops import ssd as torch_ssd
from lightning_viper.ops.attention import row_layout
from tests.backbones.test_nemotron_h_helpers import packed_state


@pytest.fixture
def scan_labels(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``seq_idx`` of every scan call (None: the whole-row path)."""
    seen: list[Any] = []
    real = torch_ssd.ssd_scan

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append(kw.get("seq_idx"))
        return real(*args, **kw)

    monkeypatch.setattr(mamba2.torch_ssd, "ssd_scan", spy)
    return seen


def _model(prefill_chunk: int | None = None) -> NemotronHBackbone:
    torch.manual_seed(0)
    return NemotronHBackbone(pattern="M*M-", kernels="torch", prefill_chunk=prefill_chunk).eval()


@torch.no_grad()
def test_unpadded_rows_take_the_whole_row_path_and_match_the_masked_one(scan_labels: list[Any]) -> None:
    model = _model()
    state = packed_state([[12], [12]])  # two full rows, one segment each
    x = torch.randn(2, 12, model.hidden_size)
    mixer = model.block(0).mixer
    normed = model.block(0).norm(x)
    whole = mixer(normed, state.mask, state.segment, None, None, row_layout(state.mask, state.segment))
    masked = mixer(normed, state.mask, state.segment, None, None, None)  # no layout: the general path
    assert scan_labels[0] is None and scan_labels[1] is not None
    torch.testing.assert_close(whole, masked, rtol=1e-5, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("prefill_chunk", [None, 5])
def test_padded_and_packed_rows_keep_their_labels(scan_labels: list[Any], prefill_chunk: int | None) -> None:
    """Row 0 is left-padded (garbage on the padding), row 1 packs two segments: each real token's
    output equals that of its segment run alone; with chunks, only pieces that lie wholly on one
    row's real tokens in every row may go the whole-row way."""
    model = _model(prefill_chunk)
    rows = [[9], [6, 8]]
    state = packed_state(rows)
    x = torch.randn(2, 14, model.hidden_size)
    out = model(x, state).hidden  # (2, 14, D)
    assert any(label is not None for label in scan_labels)  # the padded / packed pieces kept labels
    if prefill_chunk is None:
        assert None not in scan_labels  # a row with padding or two segments: never the whole-row path
    for r, lengths in enumerate(rows):
        end = 14
        for n in reversed(lengths):
            alone = model(x[r : r + 1, end - n : end], packed_state([[n]])).hidden[0]
            torch.testing.assert_close(out[r, end - n : end], alone, rtol=1e-4, atol=1e-5)
            end -= n


@torch.no_grad()
def test_chunked_whole_rows_equal_one_call_with_the_state_carried(scan_labels: list[Any]) -> None:
    """Unpadded rows in chunks: every piece goes the whole-row way and the carried conv / SSM
    states make them equal to one call over the sequence, cache included."""
    state = packed_state([[17], [17]])
    x = torch.randn(2, 17, 64)
    one, chunked = _model(), _model(prefill_chunk=6)
    cache_one, cache_chunked = one.new_cache(2), chunked.new_cache(2)
    ref = one(x, state, cache=cache_one).hidden
    got = chunked(x, state, cache=cache_chunked).hidden
    assert scan_labels and all(label is None for label in scan_labels)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(cache_chunked.layers, cache_one.layers, strict=True):
        if isinstance(a, mamba2.MambaLayerCache):
            torch.testing.assert_close(a.ssm_state, b.ssm_state, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(a.conv_state, b.conv_state, rtol=1e-4, atol=1e-5)
