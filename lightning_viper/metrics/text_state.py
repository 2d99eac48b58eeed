"""Texts as metric states: UTF-8 bytes in float32 tensors that torchmetrics can concatenate
across processes (``dist_reduce_fx="cat"``), and back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat


def encode_texts(texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(all bytes, per-text byte lengths), both float32.

    float32 holds bytes and lengths (< 2**24) exactly and matches the dtype torchmetrics gives the
    empty state of a process that saw no sample, so all_gather sees one dtype on every process.
    """
    data = [t.encode("utf-8") for t in texts]
    flat = torch.tensor([b for d in data for b in d], dtype=torch.float32)  # (sum of bytes,)
    return flat, torch.tensor([len(d) for d in data], dtype=torch.float32)  # (S,)


def decode_texts(flat: Tensor, lengths: Tensor) -> list[str]:
    """The texts :func:`encode_texts` encoded."""
    raw = bytes(flat.to(torch.long).tolist())
    out, pos = [], 0
    for n in lengths.to(torch.long).tolist():
        out.append(raw[pos : pos + n].decode("utf-8"))
        pos += n
    return out


def cat_state(state: list[Tensor] | Tensor) -> Tensor:
    """A "cat" state as one tensor: before a sync it is a list of per-update tensors (maybe none)."""
    if isinstance(state, list):
        return dim_zero_cat(state) if state else torch.zeros(0)
    return state
