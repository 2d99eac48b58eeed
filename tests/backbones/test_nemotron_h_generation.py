"""Prefill + decode with the hybrid cache: transformers' greedy generate, per-layer cache lengths."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_h_loading import load_nemotron_h
from lightning_viper.compression.base import CompressionStage
from lightning_viper.sequence import SequenceState, compact
from tests.backbones.test_nemotron_h_helpers import hf_model, packed_state, place


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.set_num_threads(1)
    model = hf_model(seed=3)
    path = tmp_path_factory.mktemp("nemotron_gen") / "tiny"
    model.save_pretrained(path)
    return model, str(path)


@torch.no_grad()
def greedy(model: NemotronHBackbone, ids: Tensor, state: SequenceState, steps: int, stages=()) -> Tensor:
    """(B, steps) greedy tokens: prefill with a cache, then one decode call per token."""
    cache = model.new_cache(ids.shape[0])
    out = model(model.embed(ids), state, stages, cache=cache)
    nxt = model.logits(out.hidden[:, -1]).argmax(-1)  # (B,)
    tokens = [nxt]
    for _ in range(steps - 1):
        hidden = model.decode(model.embed(nxt[:, None]), cache)
        nxt = model.logits(hidden[:, -1]).argmax(-1)
        tokens.append(nxt)
    return torch.stack(tokens, 1)


@pytest.mark.parametrize("prefill_chunk", [None, 3])
def test_greedy_generation_matches_transformers(pair, prefill_chunk):
    hf, path = pair
    ours = load_nemotron_h(path, kernels="torch", prefill_chunk=prefill_chunk).eval()
    lengths = [9, 4, 12]
    prompts = [torch.randint(1, 97, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in lengths]
    state = packed_state([[n] for n in lengths])
    got = greedy(ours, place(prompts, state), state, steps=8)
    for r, prompt in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, min_new_tokens=8)
        assert got[r].tolist() == ref[0, len(prompt) :].tolist(), f"row {r}"


def test_decode_continues_packed_rows_in_their_last_segment(pair):
    """A packed row generates from its last segment only, as if that segment were alone."""
    _, path = pair
    ours = load_nemotron_h(path, kernels="torch").eval()
    a, b = [5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15]
    packed = packed_state([[6, 5]])
    alone = packed_state([[5]])
    got = greedy(ours, place([a + b], packed), packed, steps=5)
    ref = greedy(ours, place([b], alone), alone, steps=5)
    assert got.tolist() == ref.tolist()


class DropEveryOther(CompressionStage):
    """Test stage: drop the tokens of even origin among the first ``span`` columns of each row."""

    def __init__(self, layer: int, span: int) -> None:
        super().__init__(layer, keep=0.5)
        self.span = span

    def forward(self, hidden, state, backbone):
        drop = (state.origin % 2 == 0) & (state.origin < self.span) & state.mask
        return compact(hidden, state, ~drop)


def test_decode_after_compression_matches_full_forward(pair):
    """Caches hold what each layer saw (attention layers of different lengths); decoding one
    token equals a fresh forward over prompt + token with the same stages."""
    _, path = pair
    ours = load_nemotron_h(path, kernels="torch").eval()
    stages = [DropEveryOther(layer=2, span=8), DropEveryOther(layer=5, span=12)]
    lengths = [13, 10]
    prompts = [torch.randint(1, 97, (n,), generator=torch.Generator().manual_seed(n + 1)).tolist() for n in lengths]
    state = packed_state([[n] for n in lengths])
    with torch.no_grad():
        cache = ours.new_cache(2)
        ours(ours.embed(place(prompts, state)), state, stages, cache=cache)
        attn_lengths = [c.key_mask.sum(1).tolist() for c in cache.layers if hasattr(c, "key_mask")]
        assert attn_lengths[0] != attn_lengths[1]  # layers 3 and 6 saw different numbers of tokens
        new = torch.tensor([[41], [42]])
        stepped = ours.decode(ours.embed(new), cache)[:, 0]
        longer = [[*p, int(n)] for p, n in zip(prompts, new[:, 0], strict=True)]
        full_state = packed_state([[n + 1] for n in lengths])
        full = ours(ours.embed(place(longer, full_state)), full_state, stages).hidden[:, -1]
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=2e-5)
