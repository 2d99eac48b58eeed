"""Token mixers with edges removed: attention with a key mask, Mamba-2 through its quadratic form.

Both compute a layer's mixer output from its normed input ``x`` (B, T, D) exactly as the layer
does, except that the edges in :class:`~lightning_viper.analysis.edges.Edges` carry nothing:

* attention: the removed (query, key) pairs are masked before the softmax, so a receiver spreads
  its attention over the keys it may still see;
* Mamba-2: the SSD mixing matrix entries M[i, j] of removed pairs are zeroed and, for a
  receiver, the source tokens' steps do not decay its memory of earlier tokens (as if the
  sources were absent; :mod:`.ssd_form`). The depthwise causal conv before the SSD (width K,
  which mixes each position with its K-1 predecessors) is cut too: the conv outputs at receiver
  positions are computed with the source inputs zeroed (``Mamba2Mixer.ssd_inputs(conv_cut=...)``).
  Without this cut the first K-1 instruction tokens after the video would still read vision
  tokens through the conv taps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_viper.analysis.edges import Edges, Flow
from lightning_viper.analysis.ssd_form import ssd_quadratic
from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.ops.attention import allowed_keys, masked_attention
from lightning_viper.sequence import SequenceState


def allowed_attention(state: SequenceState) -> Tensor:
    """(B, T, T) bool: query i may attend key j (causal, same segment, real tokens)."""
    query_segment = torch.where(state.mask, state.segment, torch.full_like(state.segment, -1))
    return allowed_keys(state.mask, state.segment, query_segment)


def knocked_attention(attn: GQAttention, x: Tensor, state: SequenceState, edges: Edges) -> Tensor:
    """Attention output (B, T, D) of normed input x (B, T, D) with ``edges`` masked."""
    q = attn.query(x, state.position)  # (B, Hq, T, hd)
    k, v = attn.key_value(x, state.position)  # (B, Hkv, T, hd)
    allowed = allowed_attention(state) & ~edges.blocked()  # (B, T, T)
    return attn.output(masked_attention(q, k, v, allowed, attn.scale))


def knocked_mamba(mixer: Mamba2Mixer, x: Tensor, state: SequenceState, edges: Edges) -> Tensor:
    """Mamba-2 output (B, T, D) of normed input x (B, T, D) with ``edges`` zeroed in the SSD matrix
    and cut in the conv."""
    inp = mixer.ssd_inputs(x, state.mask, state.segment, conv_cut=(edges.sources, edges.receivers))
    y = ssd_quadratic(inp, state.segment, edges)  # (B, T, H, P)
    return mixer.ssd_output(y, inp.z)


def knocked_mixer(mixer: nn.Module, x: Tensor, state: SequenceState, edges: Edges) -> Tensor:
    """Dispatch on the mixer type (the layer's GQAttention or Mamba2Mixer)."""
    if isinstance(mixer, GQAttention):
        return knocked_attention(mixer, x, state, edges)
    if isinstance(mixer, Mamba2Mixer):
        return knocked_mamba(mixer, x, state, edges)
    raise TypeError(f"knockout needs an attention or Mamba-2 mixer, got {type(mixer).__name__}")


class Knockout:
    """A ``MixerOverride`` removing ``flow``'s edges (recomputed from each layer's own tokens)."""

    def __init__(self, flow: Flow | None) -> None:
        self.flow = flow  # None: remove nothing (the override path's own baseline)

    def __call__(self, index: int, mixer: nn.Module, x: Tensor, state: SequenceState) -> Tensor:
        edges = Edges.none(state) if self.flow is None else Edges.of_flow(state, self.flow)
        return knocked_mixer(mixer, x, state, edges)
