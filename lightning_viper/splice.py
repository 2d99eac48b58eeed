"""Splicing vision tokens into text embeddings: one left-padded (B, T, D) sequence + its state."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_viper.sequence import SequenceState, TokenKind, contiguous_positions


def splice(
    text_embeds: Tensor,
    input_ids: Tensor,
    lengths: Tensor,
    prompt_lengths: Tensor,
    vision: Tensor,
    tokens_per_sample: Tensor,
    placeholder_id: int,
) -> tuple[Tensor, SequenceState, Tensor]:
    """Replace each row's single placeholder token by that sample's vision tokens.

    Args:
        text_embeds: (B, L, D) embeddings of right-padded ``input_ids`` (B, L).
        lengths: (B,) real text tokens per row; tokens at or past ``prompt_lengths`` are the
            response (absent at generation time, when lengths == prompt_lengths).
        vision: (V_total, D) vision tokens of all samples, concatenated in batch order.
        tokens_per_sample: (B,) vision tokens of each sample (sums to V_total).

    Returns:
        hidden (B, T, D) left-padded, its :class:`SequenceState`, and ``source`` (B, T) long:
        the text column each token came from (-1 for vision and padding), to carry labels.
    """
    b, _, d = text_embeds.shape
    device = text_embeds.device
    is_ph = input_ids == placeholder_id  # (B, L)
    counts = is_ph.sum(1)
    if bool((counts != 1).any()):
        bad = torch.nonzero(counts != 1).flatten().tolist()
        raise ValueError(
            f"rows {bad} hold {counts[bad].tolist()} video placeholder tokens; each sample needs exactly one "
            "(check the prompt template and that the tokenizer has the <video> special token)"
        )
    ph_col = is_ph.long().argmax(1)  # (B,)
    totals = lengths - 1 + tokens_per_sample  # (B,)
    t = int(totals.max())
    pad = t - totals  # (B,) left padding

    cols = torch.arange(t, device=device).expand(b, t)  # (B, T)
    rel = cols - pad.unsqueeze(1)  # position within the real sequence, < 0 on padding
    real = rel >= 0
    before = real & (rel < ph_col.unsqueeze(1))
    in_vis = real & ~before & (rel < (ph_col + tokens_per_sample).unsqueeze(1))
    after = real & ~before & ~in_vis
    # text column: same as rel before the placeholder; shifted past it after the video
    text_col = torch.where(before, rel, rel - tokens_per_sample.unsqueeze(1) + 1)
    text_col = torch.where(before | after, text_col, torch.full_like(text_col, -1))

    # one (B, T, D) buffer written in place: no full-size temporaries (a 100k-frame video is
    # 1.6M tokens, 13.7 GiB per copy at D = 4480). The vision tokens fill their positions in
    # row-major order, which is their order in ``vision`` (samples in batch order).
    hidden = text_embeds.new_zeros(b, t, d)
    vis_rows, vis_cols = in_vis.nonzero(as_tuple=True)  # (V_total,) each
    if vis_rows.numel() != vision.shape[0]:
        raise ValueError(
            f"{vision.shape[0]} vision tokens for {vis_rows.numel()} vision positions: tokens_per_sample "
            "must sum to the number of vision tokens"
        )
    hidden.index_put_((vis_rows, vis_cols), vision.to(hidden.dtype))
    txt_rows, txt_cols = (before | after).nonzero(as_tuple=True)
    hidden.index_put_((txt_rows, txt_cols), text_embeds[txt_rows, text_col[txt_rows, txt_cols]])

    kind = torch.full((b, t), int(TokenKind.PAD), dtype=torch.long, device=device)
    kind[before] = int(TokenKind.TEXT)
    kind[in_vis] = int(TokenKind.VISION)
    is_prompt = after & (text_col < prompt_lengths.unsqueeze(1))
    kind[is_prompt] = int(TokenKind.INSTRUCTION)
    kind[after & ~is_prompt] = int(TokenKind.RESPONSE)

    rows = torch.arange(b, device=device)
    segment = torch.where(real, rows.unsqueeze(1).expand(b, t), torch.full_like(cols, -1))
    state = SequenceState(
        mask=real,
        kind=kind,
        segment=segment,
        position=contiguous_positions(real, segment),
        origin=torch.where(real, cols, torch.full_like(cols, -1)),
        segment_row=rows,
        num_vision_orig=tokens_per_sample.clone(),
    )
    return hidden, state, text_col


def pack_rows(hidden: Tensor, state: SequenceState, values: Tensor) -> tuple[Tensor, SequenceState, Tensor]:
    """Pack every sample of a left-padded batch into ONE row of segments (no padding at all).

    ``hidden`` (B, T, D) -> (1, N, D) with N the number of real tokens; ``values`` (B, T) (e.g.
    labels) follows. Segment ids stay the sample index, so Mamba-2 state and attention reset at
    each sample boundary and compression acts per sample; positions restart in each segment.
    """
    real = state.mask  # (B, T)
    n = int(real.sum())
    device = hidden.device
    packed = hidden[real].unsqueeze(0)  # (1, N, D)
    segment = state.segment[real].unsqueeze(0)  # (1, N)
    mask = torch.ones(1, n, dtype=torch.bool, device=device)
    packed_state = SequenceState(
        mask=mask,
        kind=state.kind[real].unsqueeze(0),
        segment=segment,
        position=contiguous_positions(mask, segment),
        origin=torch.arange(n, device=device).unsqueeze(0),
        segment_row=torch.zeros_like(state.segment_row),
        num_vision_orig=state.num_vision_orig,
    )
    return packed, packed_state, values[real].unsqueeze(0)
