"""Split a stateful sequence op along time so each call stays under a kernel's index limit.

mamba-ssm's Triton scan indexes with signed 32-bit integers and causal-conv1d with unsigned ones:
one call over the 9B model's 128 heads x 80 (scan) or 12,288 channels (conv) overflows past about
210k (scan) or 350k (conv) tokens, and the process dies with an illegal memory access. Running the
op piece by piece, carrying its state, gives the same result as one call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

INT32_LIMIT = 2**31 - 1  # elements one kernel call may address (signed; also safe for unsigned kernels)


def slices(total: int, size: int) -> Iterator[slice]:
    """[0, size), [size, 2 size), ... covering ``total`` positions (the last one shorter)."""
    return (slice(s, min(s + size, total)) for s in range(0, total, size))


def tokens_per_call(elements_per_token: int, multiple_of: int = 1) -> int:
    """Largest token count, a multiple of ``multiple_of``, whose tensor stays under :data:`INT32_LIMIT`."""
    if elements_per_token <= 0:
        raise ValueError(f"elements_per_token must be positive, got {elements_per_token}")
    limit = INT32_LIMIT // elements_per_token // multiple_of * multiple_of
    if limit < 1:
        raise ValueError(f"one token holds {elements_per_token} elements: no piece fits under {INT32_LIMIT}")
    return limit


def reach(x: Tensor) -> int:
    """Elements from ``x``'s first to its last element, plus one: the largest offset a kernel
    walking ``x`` through its strides computes (a column slice of a wider tensor reaches further
    than its own numel). 0 for an empty tensor."""
    if x.numel() == 0:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(x.shape, x.stride(), strict=True))


def within_reach(x: Tensor) -> Tensor:
    """``x`` as it lies when every offset into it fits :data:`INT32_LIMIT`, else a contiguous copy
    (which fits whenever ``x.numel()`` does: callers size their pieces with :func:`tokens_per_piece`)."""
    return x if reach(x) <= INT32_LIMIT else x.contiguous()


def tokens_per_piece(*xs: Tensor, multiple_of: int = 1) -> int:
    """Largest piece along dim 1 of these (B, T, ...) tensors, a multiple of ``multiple_of``, that
    32-bit kernels can address: one row read where it lies (``stride(1)`` elements per token, e.g.
    in_proj's full width for a column slice), or B rows as the compact copy
    :func:`within_reach` makes of a piece whose rows lie too far apart."""
    per_token = 1
    for x in xs:
        compact = x.shape[0] * math.prod(x.shape[2:])  # B x elements of one token
        per_token = max(per_token, compact, x.stride(1) if x.shape[0] == 1 else 0)
    return tokens_per_call(per_token, multiple_of)


def in_pieces(
    op: Callable[..., tuple[Tensor, Tensor]], max_tokens: int, sliced: Sequence[str], **kw: Any
) -> tuple[Tensor, Tensor]:
    """Call ``op(**kw)`` over pieces of at most ``max_tokens`` positions along dim 1.

    ``op`` returns ``(y, final_state)`` and takes ``initial_state`` (state before position 0, which
    continues position 0's run) and ``seq_idx`` (B, T) run labels or None, like
    :func:`lightning_viper.ops.ssd.ssd_scan` and :func:`lightning_viper.ops.conv.causal_conv1d`.
    The keyword arguments named in ``sliced`` (and ``seq_idx``) are cut along dim 1. A carried state
    is zeroed for the rows whose piece starts a new run.
    """
    x = kw[sliced[0]]
    t = x.shape[1]
    if t <= max_tokens:
        return op(**kw)
    seq_idx = kw.get("seq_idx")
    state = kw.get("initial_state")
    ys: list[Tensor] = []
    for start in range(0, t, max_tokens):
        end = min(t, start + max_tokens)
        piece = {k: kw[k][:, start:end] for k in sliced}
        if seq_idx is not None:
            piece["seq_idx"] = seq_idx[:, start:end]
            if state is not None and start > 0:
                same = (seq_idx[:, start] == seq_idx[:, start - 1]).to(state.dtype)  # (B,)
                state = state * same.view(-1, *([1] * (state.dim() - 1)))
        y, state = op(**{**kw, **piece, "initial_state": state})
        ys.append(y)
    if state is None:
        raise RuntimeError("in_pieces: the op returned no final state")
    return torch.cat(ys, dim=1), state


ROWS_PER_PIECE = 16_384  # tokens per call of a position-wise op when no gradient is recorded


def split_rows(fn: Callable[..., Tensor], max_rows: int, *xs: Tensor) -> Tensor:
    """``fn(*xs)`` for a position-wise ``fn`` (..., C_i) -> (..., C_out), called on at most
    ``max_rows`` rows (positions) at a time, with or without autograd.

    Without autograd each piece is written into one preallocated output; with it the pieces are
    concatenated (autograd keeps them anyway).
    """
    lead = xs[0].shape[:-1]
    rows = lead.numel()
    if rows <= max_rows:
        return fn(*xs)
    flat = [x.reshape(rows, x.shape[-1]) for x in xs]  # (N, C_i), views where the layout allows
    starts = range(0, rows, max_rows)
    if torch.is_grad_enabled():
        out = torch.cat([fn(*(f[s : s + max_rows] for f in flat)) for s in starts])
        return out.view(*lead, out.shape[-1])
    first = fn(*(f[:max_rows] for f in flat))
    buf = first.new_empty(rows, first.shape[-1])  # (N, C_out)
    buf[:max_rows] = first
    del first  # else alive beside every later piece (4 GiB of a fused norm over 819k tokens)
    for s in starts[1:]:
        buf[s : s + max_rows] = fn(*(f[s : s + max_rows] for f in flat))
    return buf.view(*lead, buf.shape[-1])


def map_rows(fn: Callable[..., Tensor], *xs: Tensor) -> Tensor:
    """``fn(*xs)`` for a position-wise ``fn`` (..., C_i) -> (..., C_out), over pieces of
    :data:`ROWS_PER_PIECE` rows when autograd is off, so its temporaries (float32 copies, MLP
    activations) scale with the piece, not the sequence: at 196k tokens the 9B model's gated norm
    alone holds 7.5 GiB per float32 copy.

    With gradients recorded the whole call runs at once (autograd keeps its inputs anyway).
    """
    if torch.is_grad_enabled():
        return fn(*xs)
    return split_rows(fn, ROWS_PER_PIECE, *xs)
