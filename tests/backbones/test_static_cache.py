"""The static KV cache (``new_cache(B, max_length)``) against the dynamic one, and what a CUDA graph
of the decode step needs from it: no tensor of the cache is ever replaced, shapes stay fixed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.cache import KVCache, MambaLayerCache
from lightning_viper.compression.base import CompressionStage
from lightning_viper.compression.token_drop import TokenDrop
from lightning_viper.compression.transv import TransV
from lightning_viper.sequence import SequenceState
from tests.backbones.conftest import layout_state
from tests.backbones.test_host_syncs import BUILDERS

STEPS = 6


@torch.no_grad()
def decode_logits(
    backbone: Backbone,
    hidden: Tensor,
    state: SequenceState,
    stages: Sequence[CompressionStage],
    max_length: int | None,
) -> Tensor:
    """(B, STEPS, V) logits: the prefill's last position, then greedy decode steps."""
    cache = backbone.new_cache(state.batch_size, max_length)
    out = backbone(hidden, state, stages=stages, cache=cache)
    logits = [backbone.logits(out.hidden[:, -1])]
    for _ in range(STEPS - 1):
        ids = logits[-1].argmax(-1)  # (B,)
        logits.append(backbone.logits(backbone.decode(backbone.embed(ids[:, None]), cache)[:, -1]))
    return torch.stack(logits, 1)


CASES = {
    "left-padded": ([[14], [9], [12]], None),
    "packed": ([[6, 8], [12]], None),
    "transv": ([[14], [9], [12]], "transv"),
    "token-drop": ([[6, 8], [12]], "drop"),
}


@pytest.mark.parametrize("prefill_chunk", [None, 4])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_static_cache_decodes_like_the_dynamic_one(name: str, case: str, prefill_chunk: int | None) -> None:
    backbone = BUILDERS[name](prefill_chunk=prefill_chunk).eval()
    rows, compression = CASES[case]
    state = layout_state(rows, vision=4)
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size) * state.mask[..., None]
    stages: list[CompressionStage] = []
    layer = backbone.attention_layers[0]
    if compression == "transv":
        stages = [TransV(layer, 0.5)]
        stages[0].bind(backbone)
        torch.nn.init.constant_(stages[0].alpha, 0.3)  # a live transfer, not plain dropping
    elif compression == "drop":
        stages = [TokenDrop(layer, 0.5)]
    dynamic = decode_logits(backbone, hidden, state, stages, None)
    static = decode_logits(backbone, hidden, state, stages, state.length + STEPS)
    assert torch.equal(static.argmax(-1), dynamic.argmax(-1))
    torch.testing.assert_close(static, dynamic, rtol=1e-5, atol=1e-5)


def cache_tensors(cache: object) -> dict[str, Tensor]:
    """Every tensor a decode step reads or writes, by layer and attribute."""
    out: dict[str, Tensor] = {}
    for i, entry in enumerate(getattr(cache, "layers", [])):
        if isinstance(entry, KVCache):
            names = ["k", "v", "mask", "segment", "next_position", "cursor"]
        elif isinstance(entry, MambaLayerCache):
            names = ["conv_state", "ssm_state", "segment"]
        else:
            continue
        out.update({f"{i}.{n}": getattr(entry, n) for n in names})
    out["last_segment"] = cache.last_segment  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("name", sorted(BUILDERS))
@torch.no_grad()
def test_decode_steps_write_static_caches_in_place(name: str) -> None:
    """A CUDA graph replays on the same memory: every cache tensor stays the same object and
    storage, and the step's output keeps its shape."""
    backbone = BUILDERS[name]().eval()
    state = layout_state([[7], [5]])
    cache = backbone.new_cache(2, state.length + 4)
    backbone(torch.randn(2, state.length, backbone.hidden_size), state, cache=cache)
    before = cache_tensors(cache)
    assert all(isinstance(t, Tensor) for t in before.values())
    pointers = {k: t.data_ptr() for k, t in before.items()}
    snapshot = {k: t.clone() for k, t in before.items()}
    ids = torch.tensor([3, 4])
    for _ in range(3):
        h = backbone.decode(backbone.embed(ids[:, None]), cache)
        assert h.shape == (2, 1, backbone.hidden_size)
        ids = backbone.logits(h[:, -1]).argmax(-1)
    after = cache_tensors(cache)
    assert {k: t is before[k] for k, t in after.items()} == {k: True for k in before}
    assert {k: t.data_ptr() for k, t in after.items()} == pointers
    changed = {k for k, t in after.items() if not torch.equal(t, snapshot[k])}
    kv = [i for i, c in enumerate(cache.layers) if isinstance(c, KVCache)]
    assert {f"{i}.cursor" for i in kv} <= changed and {f"{i}.k" for i in kv} <= changed
    assert all(int(cache.layers[i].cursor) == state.length + 3 for i in kv)
    assert all(int(cache.layers[i].key_mask.sum()) == 7 + 5 + 2 * 3 for i in kv)


def kv(n: int, fill: float = 1.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(1, 2, n, 4) keys and values, an all-real (1, n) mask and segment 0."""
    k = torch.full((1, 2, n, 4), fill)
    return k, k.clone(), torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.long)


def test_static_kv_cache_fills_its_buffer_and_masks_the_rest() -> None:
    cache = KVCache(max_length=8)
    k = cache.append(*kv(3), position=torch.arange(3)[None])[0]
    assert k.shape == (1, 2, 3, 4) and cache.k is not None and cache.k.shape == (1, 2, 8, 4)
    k1 = cache.append(*kv(2, 2.0), position=torch.arange(3, 5)[None])[0]
    assert k1.shape[2] == 5 and cache.length == 5 and cache.next_position.tolist() == [5]
    k2, _, m2, s2 = cache.append_token(torch.full((1, 2, 1, 4), 3.0), torch.zeros(1, 2, 1, 4), torch.tensor([[0]]))
    assert k2.shape == (1, 2, 8, 4) and cache.length == 8  # the whole buffer, masked
    assert m2.tolist() == [[True] * 6 + [False] * 2] and s2.tolist() == [[0] * 6 + [-1] * 2]
    assert k2[0, 0, :, 0].tolist() == [1, 1, 1, 2, 2, 3, 0, 0]
    assert cache.next_position.tolist() == [6] and cache.cursor is not None and cache.cursor.tolist() == [6]


def test_static_kv_cache_refuses_what_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="max_length"):
        KVCache(max_length=0)
    cache = KVCache(max_length=4)
    cache.append(*kv(3))
    with pytest.raises(ValueError, match="larger max_length"):
        cache.append(*kv(2))
    cache.append_token(*kv(1)[:2], torch.tensor([[0]]))
    with pytest.raises(RuntimeError, match="before decoding"):
        cache.append(*kv(1))
    with pytest.raises(RuntimeError, match="prefill"):
        KVCache(max_length=4).append_token(*kv(1)[:2], torch.tensor([[0]]))
    k, v, m, s = kv(2)
    with pytest.raises(ValueError, match="autograd"):
        KVCache(max_length=4).append(k.requires_grad_(), v, m, s)
