"""Chunked inference writes each layer's pieces into one buffer (over the loop's own intermediates):
same outputs and cache as the whole sequence, and the caller's input is never written."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_viper.backbones import Backbone, tiny_hybrid, tiny_qwen2
from lightning_viper.bench.decode import text_state
from lightning_viper.compression import TokenDrop
from lightning_viper.sequence import SequenceState

from ..memory_watch import BigOutputs
from .conftest import layout_state


def pair(family: str) -> tuple[Backbone, Backbone, SequenceState, Tensor]:
    """The same tiny backbone whole and with 7-token chunked prefill, a 30-token state and its embeddings."""
    torch.manual_seed(0)
    whole = (tiny_hybrid() if family == "hybrid" else tiny_qwen2()).eval()
    chunked = (tiny_hybrid(prefill_chunk=7) if family == "hybrid" else tiny_qwen2(prefill_chunk=7)).eval()
    chunked.load_state_dict(whole.state_dict())
    with torch.no_grad():
        hidden = whole.embed(torch.randint(0, whole.vocab_size, (1, 30)))
    return whole, chunked, text_state(30, torch.device("cpu")), hidden


@pytest.mark.parametrize("family", ["hybrid", "qwen2"])
def test_chunked_inference_matches_whole_and_leaves_the_input_alone(family: str) -> None:
    whole, chunked, state, hidden = pair(family)
    with torch.no_grad():
        before = hidden.clone()
        cache_w, cache_c = whole.new_cache(1), chunked.new_cache(1)
        ref = whole(hidden, state, cache=cache_w).hidden
        out = chunked(hidden, state, cache=cache_c).hidden
        assert torch.equal(hidden, before)  # the caller's tensor is untouched
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        step = whole.embed(torch.tensor([[3]]))
        torch.testing.assert_close(chunked.decode(step, cache_c), whole.decode(step, cache_w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["hybrid", "qwen2"])
def test_a_donated_input_takes_the_first_layers_output(family: str) -> None:
    """``donate=True``: same outputs and cache, and the input's buffer is reused (one fewer
    whole-sequence tensor: only the final norm's output is new)."""
    whole, chunked, state, hidden = pair(family)
    with torch.no_grad():
        ref = whole(hidden, state, cache=whole.new_cache(1)).hidden
        kept, donated = hidden.clone(), hidden.clone()
        with BigOutputs(int(hidden.nbytes * 0.9)) as own:
            chunked(kept, state, cache=chunked.new_cache(1))
        with BigOutputs(int(hidden.nbytes * 0.9)) as reuse:
            out = chunked(donated, state, cache=chunked.new_cache(1), donate=True).hidden
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        assert torch.equal(kept, hidden) and not torch.equal(donated, hidden)  # only the donated one was written
        assert len(reuse.ops) == len(own.ops) - 1, (own.ops, reuse.ops)


@pytest.mark.parametrize("family", ["hybrid", "qwen2"])
def test_a_stages_shorter_output_moves_into_the_donated_buffer(family: str) -> None:
    """``donate=True`` with a dropping stage: the layer after it reads (in chunks) the donated
    buffer's front (the stage's separate output is freed), with the outputs and cache of the
    whole sequence."""
    whole, chunked, _, hidden = pair(family)
    state = layout_state([[30]], vision=24, instruction_tail=3)  # 24 vision tokens, 50% dropped at layer 2
    stages = [TokenDrop(layer=2, keep=0.5)]
    seen: list[int] = []
    read = chunked.layers[2].register_forward_pre_hook(lambda _, a: seen.append(a[0].untyped_storage().data_ptr()))
    with torch.no_grad():
        cache_w, cache_c = whole.new_cache(1), chunked.new_cache(1)
        ref = whole(hidden, state, stages=stages, cache=cache_w)
        donated = hidden.clone()
        out = chunked(donated, state, stages=stages, cache=cache_c, donate=True)
        read.remove()
        assert out.state.length < state.length  # the stage dropped tokens
        assert seen and set(seen) == {donated.untyped_storage().data_ptr()}, "layer 2 read a buffer of its own"
        torch.testing.assert_close(out.hidden, ref.hidden, rtol=1e-4, atol=1e-5)
        step = whole.embed(torch.tensor([[3]]))
        torch.testing.assert_close(chunked.decode(step, cache_c), whole.decode(step, cache_w), rtol=1e-4, atol=1e-5)
