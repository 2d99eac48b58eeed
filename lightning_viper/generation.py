"""Greedy generation over a backbone cache, after a (possibly compressed) prefill.

A decode step (embed -> ``Backbone.decode`` -> logits -> argmax) reads no host value, so the
loop only syncs to see whether every row has finished: every step on the CPU (free there), every
:data:`STOP_CHECK_EVERY` steps on a GPU, where the extra steps' tokens are cut off afterwards, so
the result is the same as stopping at once. With ``graphs=True`` the KV caches are static and, on
CUDA, the step is captured once as a CUDA graph and replayed per token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_viper.backbones.base import Backbone, BackboneOutput
from lightning_viper.compression.base import CompressionStage
from lightning_viper.ops.profiling import Marks, region
from lightning_viper.sequence import SequenceState

log = logging.getLogger(__name__)

STOP_CHECK_EVERY = 8  # decode steps between host reads of "has every row finished" on a GPU

Step = Callable[[Tensor], Tensor]  # (B,) token ids -> (B,) next ids, updating the cache


@dataclass
class Generated:
    tokens: Tensor  # (B, N) generated ids, eos and anything after it replaced by pad_id
    prefill: BackboneOutput  # the prefill's output (state after compression, stage records)


def eager_step(backbone: Backbone, cache: object) -> Step:
    """The decode step run op by op: ids (B,) -> next ids (B,), appending to ``cache``."""

    def step(tok: Tensor) -> Tensor:
        with region("decode"):
            h = backbone.decode(backbone.embed(tok.unsqueeze(1)), cache)  # (B, 1, D)
            return backbone.logits(h[:, -1]).argmax(-1)  # (B,)

    return step


class GraphStep:
    """A decode step (over static caches) captured once as a CUDA graph and replayed per token.

    The first call is the warm-up: a real step, run eagerly on a side stream (kernels compile and
    pick their configurations, the allocator and cuBLAS set up); the graph is captured right
    after it (capturing runs nothing, so the cache is advanced once). Every later call copies its
    ids into the graph's input buffer and replays the graph.
    """

    def __init__(self, step: Step) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.ids = torch.empty(0)  # the graph's input (B,), set by the first call
        self.out = torch.empty(0)  # the graph's output (B,)

    def __call__(self, tok: Tensor) -> Tensor:
        if self.graph is None:
            return self._warm_up_and_capture(tok)
        self.ids.copy_(tok)
        self.graph.replay()
        return self.out.clone()  # the buffer is overwritten by the next replay

    def _warm_up_and_capture(self, tok: Tensor) -> Tensor:
        self.ids = tok.clone()
        side = torch.cuda.Stream(device=tok.device)
        side.wait_stream(torch.cuda.current_stream(tok.device))
        with torch.cuda.stream(side):
            first = self.step(self.ids)
        torch.cuda.current_stream(tok.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may allocate while this thread captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.step(self.ids)
        self.graph = graph
        return first


def stop_check_every(device: torch.device) -> int:
    """Decode steps between host reads of "has every row finished": each step where a read is
    free (CPU), :data:`STOP_CHECK_EVERY` on a GPU, where each read waits for the device."""
    return STOP_CHECK_EVERY if device.type == "cuda" else 1


def _rows_finished_at(finished: list[Tensor]) -> int:
    """Number of steps up to the first whose (,) flag says every row is done (all of them if none)."""
    flags = torch.stack(finished)  # (N,) bool
    first = flags.int().argmax() + 1  # first True, 1-based (argmax is 0 when there is none)
    return int(torch.where(flags.any(), first, len(finished)))


STATIC_MULTIPLE = 256
"""Static KV caches are a whole number of 256-column blocks, so a decode step's split-key P @ V
(``ops.attention.single_query_attention``) reads the cache in equal pieces, without a copy."""


def static_columns(columns: int) -> int:
    """``columns`` rounded up to a multiple of :data:`STATIC_MULTIPLE` (the extra ones stay masked)."""
    return -(-columns // STATIC_MULTIPLE) * STATIC_MULTIPLE


@torch.no_grad()
def greedy_generate(
    backbone: Backbone,
    hidden: Tensor,
    state: SequenceState,
    stages: Sequence[CompressionStage],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    marks: Marks | None = None,
    graphs: bool = False,
    donate: bool = False,
) -> Generated:
    """Prefill the left-padded prompt (B, T, D) through the compression schedule, then decode.

    The cache is filled from whatever sequence each layer saw, so layers after a compression
    stage hold only the kept tokens. Stops when every row has produced ``eos_id``. ``marks``
    (when given) gets ``first_token`` once the first token is launched, ``captured`` after the
    graph's warm-up step and capture (``graphs`` on CUDA) and ``decoded`` after the last step;
    they are device events on a GPU, so marking adds no host sync. ``graphs``: static KV caches
    (T + ``max_new_tokens`` columns, rounded up by :func:`static_columns`) and, on CUDA, the
    decode step captured as a CUDA graph (elsewhere it runs eagerly over the static caches; the
    reason is logged). Same tokens either way.
    ``donate``: the caller will not read ``hidden`` again (:meth:`Backbone.forward`'s ``donate``).
    """
    b, t = hidden.shape[0], hidden.shape[1]
    cache = backbone.new_cache(b, static_columns(t + max_new_tokens) if graphs else None)
    with region("prefill"):
        out = backbone(hidden, state, stages=stages, cache=cache, donate=donate)
        next_tok = backbone.logits(out.hidden[:, -1]).argmax(-1)  # (B,)
    if marks is not None:
        marks.mark("first_token")
    step = eager_step(backbone, cache)
    captures = graphs and hidden.device.type == "cuda"
    if captures:
        step = GraphStep(step)
    elif graphs:
        log.info("CUDA graphs need a CUDA device (the prompt is on %s): decoding eagerly, static caches", hidden.device)
    check_every = stop_check_every(hidden.device)
    done = torch.zeros(b, dtype=torch.bool, device=hidden.device)
    tokens: list[Tensor] = []
    finished: list[Tensor] = []  # (,) bool per step: every row done after it
    for i in range(max_new_tokens):
        tokens.append(torch.where(done, torch.full_like(next_tok, pad_id), next_tok))
        done = done | (next_tok == eos_id)
        finished.append(done.all())
        if i == max_new_tokens - 1 or ((i + 1) % check_every == 0 and bool(finished[-1])):
            break
        next_tok = step(next_tok)
        if marks is not None and captures and i == 0:
            marks.mark("captured")  # after the warm-up step and the capture
    if marks is not None:
        marks.mark("decoded")
    if not tokens:
        return Generated(torch.empty(b, 0, dtype=torch.long, device=hidden.device), out)
    ids = torch.stack(tokens, 1)[:, : _rows_finished_at(finished)]  # (B, N): as if stopped at once
    ids = torch.where(ids == eos_id, torch.full_like(ids, pad_id), ids)
    return Generated(ids, out)
