"""Generation caches: one key/value cache for every attention layer, the Mamba-2 state, and the
per-backbone cache that holds one entry per layer.

Compression can drop tokens between layers, so attention layers may hold different numbers of
keys (and, after renumbering, different next positions); each entry records its own key mask,
segments and next rotary position. Mamba layers hold a fixed-size state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class MambaLayerCache:
    """Recurrent state of one Mamba-2 layer (None until the layer has run once)."""

    conv_state: Tensor | None = None  # (B, C_conv, K-1) last K-1 conv inputs
    ssm_state: Tensor | None = None  # (B, H, P, N) float32
    segment: Tensor | None = None  # (B,) segment of the last token seen, -1 if none

    def reset_rows(self, first_segment: Tensor) -> None:
        """Zero the states of rows whose next token starts another segment than the last one seen."""
        if self.segment is None or self.conv_state is None or self.ssm_state is None:
            return
        same = self.segment == first_segment  # (B,)
        self.conv_state = self.conv_state * same.view(-1, 1, 1).to(self.conv_state.dtype)
        self.ssm_state = self.ssm_state * same.view(-1, 1, 1, 1).to(self.ssm_state.dtype)


class KVCache:
    """Keys and values of one attention layer, left padded like the sequence it saw.

    ``append`` adds any number of tokens on the right (the prefill, prefill chunks), and
    ``append_token`` one decoded token per row. Dynamic (``max_length=None``): without autograd
    the buffers grow geometrically and are written in place, so decoding N tokens copies O(N)
    keys, not O(N^2); while gradients flow through the cache (chunked training) appends
    concatenate, so autograd's saved tensors are never overwritten.

    Static (``max_length`` columns, inference only): the buffers are allocated once at that size
    by the first ``append``; ``append_token`` writes in place at a column held in a device tensor
    (``cursor``) and returns the whole buffers, padded columns masked, so a decode step reads and
    writes no host value and keeps its shapes: it can be captured in a CUDA graph. Decoded tokens
    are counted on the device only; the prompt must come (``append``) before decoding, and the
    caller sizes ``max_length`` for prompt + new tokens (writing past it is an index error).
    """

    def __init__(self, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"KVCache max_length must be a positive number of columns or None, got {max_length}")
        self.max_length = max_length
        self.k: Tensor | None = None  # (B, Hkv, capacity, hd)
        self.v: Tensor | None = None
        self.mask: Tensor | None = None  # (B, capacity) bool
        self.segment: Tensor | None = None  # (B, capacity) long, -1 on padding
        self.next_position: Tensor | None = None  # (B,) long: rotary position of each row's next token
        self.cursor: Tensor | None = None  # static: (1,) long, the column of the next decoded token
        self.decoding = False  # static: append_token has run (the buffers then span every column)
        self.size = 0  # columns written by append (and, dynamic, by append_token)

    @property
    def static(self) -> bool:
        return self.max_length is not None

    @property
    def length(self) -> int:
        """Columns the cached keys span (a decoding static cache: all ``max_length``, masked)."""
        if self.static and self.decoding:
            assert self.max_length is not None
            return self.max_length
        return self.size

    @property
    def key(self) -> Tensor | None:
        """(B, Hkv, Tk, hd) cached keys (a view of the buffer), None before the prefill."""
        return None if self.k is None else self.k[:, :, : self.length]

    @property
    def value(self) -> Tensor | None:
        return None if self.v is None else self.v[:, :, : self.length]

    @property
    def key_mask(self) -> Tensor | None:
        """(B, Tk) bool, True on real keys."""
        return None if self.mask is None else self.mask[:, : self.length]

    @property
    def key_segment(self) -> Tensor | None:
        """(B, Tk) long, -1 on padding."""
        return None if self.segment is None else self.segment[:, : self.length]

    def append(
        self, k: Tensor, v: Tensor, mask: Tensor, segment: Tensor, position: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Add (B, Hkv, T, hd) keys/values with their (B, T) mask, segments and positions.

        Returns every cached key, value (B, Hkv, Tk, hd), key mask and key segment (B, Tk).
        """
        n = k.shape[2]
        if position is not None:
            self.next_position = position[:, -1] + 1  # the last column is a real token (left padding)
        if self.static:
            return self._append_static(k, v, mask, segment)
        if self.k is None or self.v is None or self.mask is None or self.segment is None:
            self.k, self.v, self.mask, self.segment, self.size = k, v, mask, segment, n
            return k, v, mask, segment
        size = self.size
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad or self.k.requires_grad):
            self.k = torch.cat((self.k[:, :, :size], k), 2)
            self.v = torch.cat((self.v[:, :, :size], v), 2)
            self.mask = torch.cat((self.mask[:, :size], mask), 1)
            self.segment = torch.cat((self.segment[:, :size], segment), 1)
        else:
            if size + n > self.k.shape[2]:
                self._grow(size + n + max(size, 16))
            self.k[:, :, size : size + n] = k
            self.v[:, :, size : size + n] = v
            self.mask[:, size : size + n] = mask
            self.segment[:, size : size + n] = segment
        self.size = size + n
        end = self.size
        return self.k[:, :, :end], self.v[:, :, :end], self.mask[:, :end], self.segment[:, :end]

    def append_token(self, k: Tensor, v: Tensor, segment: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Add one decoded token per row, k, v (B, Hkv, 1, hd) of segment (B, 1), after the prefill;
        advances ``next_position``. Returns every key, value (B, Hkv, Tk, hd), key mask and key
        segment (B, Tk): static caches return their whole buffers, written in place (no host sync)."""
        if self.k is None or self.v is None or self.mask is None or self.segment is None:
            raise RuntimeError("KVCache is empty: run a prefill forward with this cache before decoding")
        if not self.static:
            out = self.append(k, v, torch.ones_like(segment, dtype=torch.bool), segment)
            if self.next_position is not None:
                self.next_position = self.next_position + 1
            return out
        assert self.cursor is not None
        self.decoding = True
        self.k.index_copy_(2, self.cursor, k)
        self.v.index_copy_(2, self.cursor, v)
        self.mask.index_fill_(1, self.cursor, True)
        self.segment.index_copy_(1, self.cursor, segment)
        self.cursor.add_(1)
        if self.next_position is not None:
            self.next_position.add_(1)
        return self.k, self.v, self.mask, self.segment

    def _append_static(
        self, k: Tensor, v: Tensor, mask: Tensor, segment: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``append`` into the buffers of ``max_length`` columns (allocated on the first call)."""
        assert self.max_length is not None
        b, hkv, n, hd = k.shape
        if self.decoding:
            raise RuntimeError("a static KVCache takes the whole prompt (append) before decoding; start a new cache")
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            raise ValueError("a static KVCache holds no autograd history: use KVCache() while gradients flow")
        size = self.size
        if size + n > self.max_length:
            raise ValueError(
                f"static KVCache of {self.max_length} columns cannot take {n} more after {size}: "
                "build the cache with a larger max_length (prompt + new tokens)"
            )
        if self.k is None or self.v is None or self.mask is None or self.segment is None or self.cursor is None:
            self.k = k.new_zeros(b, hkv, self.max_length, hd)
            self.v = v.new_zeros(b, hkv, self.max_length, hd)
            self.mask = mask.new_zeros(b, self.max_length)
            self.segment = segment.new_full((b, self.max_length), -1)
            self.cursor = torch.zeros(1, dtype=torch.long, device=k.device)
        self.k[:, :, size : size + n] = k
        self.v[:, :, size : size + n] = v
        self.mask[:, size : size + n] = mask
        self.segment[:, size : size + n] = segment
        self.size = size + n
        self.cursor.fill_(self.size)
        end = self.size
        return self.k[:, :, :end], self.v[:, :, :end], self.mask[:, :end], self.segment[:, :end]

    def _grow(self, capacity: int) -> None:
        """Reallocate the buffers to ``capacity`` columns, keeping the first ``size``."""
        assert self.k is not None and self.v is not None and self.mask is not None and self.segment is not None
        size, b = self.size, self.k.shape[0]
        k = self.k.new_zeros(b, self.k.shape[1], capacity, self.k.shape[3])
        v = self.v.new_zeros(b, self.v.shape[1], capacity, self.v.shape[3])
        k[:, :, :size], v[:, :, :size] = self.k[:, :, :size], self.v[:, :, :size]
        mask = self.mask.new_zeros(b, capacity)
        mask[:, :size] = self.mask[:, :size]
        segment = self.segment.new_full((b, capacity), -1)
        segment[:, :size] = self.segment[:, :size]
        self.k, self.v, self.mask, self.segment = k, v, mask, segment


LayerCache = MambaLayerCache | KVCache | None


@dataclass
class BackboneCache:
    """One cache entry per layer plus the segment each row's next token belongs to."""

    batch_size: int
    layers: list[LayerCache] = field(default_factory=list)
    last_segment: Tensor | None = None  # (B,) segment of each row's last token
