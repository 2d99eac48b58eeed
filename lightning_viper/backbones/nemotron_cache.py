"""Generation cache of the hybrid backbone: one entry per layer, filled from what that layer saw.

Compression can drop tokens between layers, so attention layers may hold different numbers of
keys; each entry records its own key mask and segments. Mamba layers hold a fixed-size state.
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


@dataclass
class AttentionLayerCache:
    """Keys and values of one attention layer, left padded like the sequence it saw."""

    key: Tensor | None = None  # (B, Hkv, Tk, hd)
    value: Tensor | None = None  # (B, Hkv, Tk, hd)
    key_mask: Tensor | None = None  # (B, Tk) bool
    key_segment: Tensor | None = None  # (B, Tk) long, -1 on padding

    @property
    def length(self) -> int:
        return 0 if self.key is None else int(self.key.shape[2])

    def append(self, key: Tensor, value: Tensor, mask: Tensor, segment: Tensor) -> None:
        """Add (B, Hkv, T, hd) keys/values and their (B, T) mask/segments on the right."""
        if self.key is None or self.value is None or self.key_mask is None or self.key_segment is None:
            self.key, self.value, self.key_mask, self.key_segment = key, value, mask, segment
            return
        self.key = torch.cat([self.key, key], 2)
        self.value = torch.cat([self.value, value], 2)
        self.key_mask = torch.cat([self.key_mask, mask], 1)
        self.key_segment = torch.cat([self.key_segment, segment], 1)


LayerCache = MambaLayerCache | AttentionLayerCache | None


@dataclass
class HybridCache:
    """Per-layer caches plus the segment each row's next token belongs to."""

    batch_size: int
    layers: list[LayerCache] = field(default_factory=list)
    last_segment: Tensor | None = None  # (B,) segment of each row's last token

    def layer(self, index: int) -> LayerCache:
        return self.layers[index]
