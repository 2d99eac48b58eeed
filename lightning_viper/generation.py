"""Greedy generation over a backbone cache, after a (possibly compressed) prefill."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_viper.backbones.base import Backbone, BackboneOutput
from lightning_viper.compression.base import CompressionStage
from lightning_viper.ops.profiling import Marks, region
from lightning_viper.sequence import SequenceState


@dataclass
class Generated:
    tokens: Tensor  # (B, N) generated ids, eos and anything after it replaced by pad_id
    prefill: BackboneOutput  # the prefill's output (state after compression, stage records)


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
) -> Generated:
    """Prefill the left-padded prompt (B, T, D) through the compression schedule, then decode.

    The cache is filled from whatever sequence each layer saw, so layers after a compression
    stage hold only the kept tokens. Stops when every row has produced ``eos_id``. ``marks``
    (when given) gets ``first_token`` once the first token is launched and ``decoded`` after the
    last step; they are device events on a GPU, so marking adds no host sync.
    """
    b = hidden.shape[0]
    cache = backbone.new_cache(b)
    with region("prefill"):
        out = backbone(hidden, state, stages=stages, cache=cache)
        next_tok = backbone.logits(out.hidden[:, -1]).argmax(-1)  # (B,)
    if marks is not None:
        marks.mark("first_token")
    done = torch.zeros(b, dtype=torch.bool, device=hidden.device)
    tokens: list[Tensor] = []
    for step in range(max_new_tokens):
        tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
        tokens.append(tok)
        done = done | (next_tok == eos_id)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        with region("decode"):
            h = backbone.decode(backbone.embed(next_tok.unsqueeze(1)), cache)  # (B, 1, D)
            next_tok = backbone.logits(h[:, -1]).argmax(-1)
    if marks is not None:
        marks.mark("decoded")
    ids = torch.stack(tokens, 1) if tokens else torch.empty(b, 0, dtype=torch.long, device=hidden.device)
    ids = torch.where(ids == eos_id, torch.full_like(ids, pad_id), ids)
    return Generated(ids, out)
