"""CUDA-graph decoding (``greedy_generate(graphs=True)``) against eager decoding, on the GPU.

GPU machine only. The hybrid uses mamba-ssm's kernels when they are installed (``kernels: auto``),
plain PyTorch otherwise. A replayed graph runs the very kernels of the eager step over the static
caches, so their tokens must be identical; the dynamic cache attends fewer (unpadded) keys, so it
is compared in float32 only.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lightning_viper import generation
from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.nemotron_h_presets import tiny_hybrid
from lightning_viper.backbones.qwen2_presets import tiny_qwen2
from lightning_viper.generation import greedy_generate
from lightning_viper.ops.profiling import Marks
from lightning_viper.sequence import SequenceState
from tests.backbones.conftest import layout_state

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BUILDERS: dict[str, Callable[[], Backbone]] = {
    "hybrid": lambda: tiny_hybrid(chunk_size=16),  # Triton's tl.dot needs every side >= 16
    "qwen2": tiny_qwen2,
}
NEW = 12


def on_cuda(name: str, dtype: str) -> tuple[Backbone, torch.Tensor, SequenceState]:
    torch.manual_seed(0)
    backbone = BUILDERS[name]().to("cuda", getattr(torch, dtype)).eval()
    cpu = layout_state([[14], [9], [12]])
    state = type(cpu)(**{k: v.cuda() for k, v in vars(cpu).items()})
    ids = torch.randint(1, backbone.vocab_size, (state.batch_size, state.length), device="cuda") * state.mask
    return backbone, backbone.embed(ids), state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_graph_decode_equals_eager_decode(name: str, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone, hidden, state = on_cuda(name, dtype)
    marks = Marks(hidden.device)
    marks.mark("start")
    graph = greedy_generate(backbone, hidden, state, [], NEW, -1, 0, marks, graphs=True)
    assert "captured" in marks.elapsed_ms()  # the step was captured and replayed
    monkeypatch.setattr(generation, "GraphStep", lambda step: step)  # the same static caches, eagerly
    eager_static = greedy_generate(backbone, hidden, state, [], NEW, -1, 0, graphs=True)
    assert graph.tokens.shape == (3, NEW)
    assert torch.equal(graph.tokens, eager_static.tokens)
    if dtype == "float32":
        assert torch.equal(graph.tokens, greedy_generate(backbone, hidden, state, [], NEW, -1, 0).tokens)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDERS))
@torch.no_grad()
def test_decode_steps_never_sync(name: str, static: bool) -> None:
    backbone, hidden, state = on_cuda(name, "float32")
    cache = backbone.new_cache(3, state.length + 8 if static else None)
    out = backbone(hidden, state, cache=cache)
    ids = backbone.logits(out.hidden[:, -1]).argmax(-1)
    backbone.decode(backbone.embed(ids[:, None]), cache)  # first step: lazy initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            ids = backbone.logits(backbone.decode(backbone.embed(ids[:, None]), cache)[:, -1]).argmax(-1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
