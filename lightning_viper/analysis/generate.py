"""Greedy answers without a generation cache, so mixer overrides see every generated token.

A knockout acts on whole sequences: the response tokens it must cut off from the video are the
generated ones. Each step therefore re-runs the backbone (compression stages included) over the
prompt plus the tokens generated so far, with the generated tokens marked RESPONSE, and takes
the next token from the last position. Without overrides this gives the same tokens as the
cached ``generation.greedy_generate`` (tested), at the cost of one full pass per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from lightning_viper.backbones.base import Backbone, MixerOverride
from lightning_viper.compression.base import CompressionStage
from lightning_viper.sequence import SequenceState, TokenKind


def append_response(hidden: Tensor, state: SequenceState, embeds: Tensor) -> tuple[Tensor, SequenceState]:
    """Append one RESPONSE token per row on the right: hidden (B, T, D) + embeds (B, 1, D)."""
    b, t = state.mask.shape

    def col(x: Tensor, value: Tensor) -> Tensor:  # (B, T) -> (B, T + 1)
        return torch.cat([x, value.view(b, 1).to(x.dtype)], 1)

    last_segment = state.segment[:, -1]  # rows are left-padded: the last column is real
    next_position = state.position[:, -1] + 1
    new_state = replace(
        state,
        mask=col(state.mask, torch.ones(b, dtype=torch.bool, device=hidden.device)),
        kind=col(state.kind, torch.full((b,), int(TokenKind.RESPONSE), device=hidden.device)),
        segment=col(state.segment, last_segment),
        position=col(state.position, next_position),
        origin=col(state.origin, torch.full((b,), t, device=hidden.device)),
    )
    return torch.cat([hidden, embeds.to(hidden.dtype)], 1), new_state


@torch.no_grad()
def greedy_full(
    backbone: Backbone,
    hidden: Tensor,
    state: SequenceState,
    stages: Sequence[CompressionStage],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    mixers: Mapping[int, MixerOverride] | None = None,
) -> Tensor:
    """(B, N) greedy token ids for the left-padded, unpacked prompt (B, T, D); eos and anything
    after it are ``pad_id`` (as ``greedy_generate`` returns them)."""
    if state.num_segments != state.batch_size:
        raise ValueError("greedy_full takes one sample per row (unpacked prompts)")
    b = hidden.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=hidden.device)
    tokens: list[Tensor] = []
    for step in range(max_new_tokens):
        out = backbone(hidden, state, stages=stages, mixers=mixers)
        next_tok = backbone.logits(out.hidden[:, -1]).argmax(-1)  # (B,)
        tokens.append(torch.where(done, torch.full_like(next_tok, pad_id), next_tok))
        done = done | (next_tok == eos_id)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        hidden, state = append_response(hidden, state, backbone.embed(next_tok.unsqueeze(1)))
    ids = torch.stack(tokens, 1) if tokens else torch.empty(b, 0, dtype=torch.long, device=hidden.device)
    return torch.where(ids == eos_id, torch.full_like(ids, pad_id), ids)
