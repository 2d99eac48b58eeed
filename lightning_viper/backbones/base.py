"""The backbone contract: an LLM that owns its layer loop so compression can act between layers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from lightning_viper.sequence import SequenceState

if TYPE_CHECKING:
    from lightning_viper.compression.base import CompressionStage

LayerKind = Literal["mamba", "attention", "mlp", "decoder"]
"""Kinds of layers: Nemotron-H mixes mamba / attention / mlp; a Transformer layer is 'decoder'
(attention + MLP in one block). Attention-guided selection needs 'attention' or 'decoder'."""


@dataclass
class StageRecord:
    """What one compression stage did in one forward pass (summed over the batch)."""

    name: str
    layer: int
    vision_before: int
    vision_after: int
    seq_len_after: int  # padded length T' after the stage


@dataclass
class BackboneOutput:
    hidden: Tensor  # (B, T', D), after the final norm
    state: SequenceState  # bookkeeping of the T' tokens that reached the last layer
    stages: list[StageRecord] = field(default_factory=list)


class Backbone(nn.Module, ABC):
    """An LLM as a stack of layers, an embedding, a final norm and an LM head.

    Subclasses build ``self.layers`` (an ``nn.ModuleList``) whose items are called as
    ``layer(hidden, state, cache=...)`` and set ``layer_kinds``; the loop below is shared.
    """

    hidden_size: int
    vocab_size: int
    layer_kinds: tuple[LayerKind, ...]
    layers: nn.ModuleList

    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    def is_attention_layer(self, layer: int) -> bool:
        return self.layer_kinds[layer] in ("attention", "decoder")

    @abstractmethod
    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T, D) embeddings."""

    @abstractmethod
    def final_norm(self, hidden: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""

    @abstractmethod
    def logits(self, hidden: Tensor) -> Tensor:
        """(..., D) final-normed hidden -> (..., V) logits."""

    @abstractmethod
    def run_layer(self, index: int, hidden: Tensor, state: SequenceState, cache: Any | None) -> Tensor:
        """Apply layer ``index`` (residual included) to (B, T, D) -> (B, T, D)."""

    @abstractmethod
    def attention_scores(self, layer: int, hidden: Tensor, state: SequenceState) -> Tensor:
        """Attention that each segment's query token (``state.query_index()``) pays to every
        token of its own segment at attention layer ``layer``, computed from the layer's own
        normed q/k projections on ``hidden`` (the input of that layer), softmax over the
        segment's causal keys, averaged over heads. Returns (B, T) float32, 0 outside."""

    @abstractmethod
    def attention_module(self, layer: int) -> nn.Module:
        """The attention mixer of layer ``layer`` (has q_proj, k_proj, v_proj, o_proj,
        num_heads, num_kv_heads, head_dim) and its pre-norm as ``.norm`` on the block."""

    @abstractmethod
    def new_cache(self, batch_size: int) -> Any:
        """An empty generation cache; ``forward(..., cache=c)`` fills it during prefill."""

    @abstractmethod
    def decode(self, hidden: Tensor, cache: Any) -> Tensor:
        """One generation step: (B, 1, D) new embeddings appended on the right -> (B, 1, D)
        final-normed hidden. Updates ``cache``."""

    def forward(
        self,
        hidden: Tensor,
        state: SequenceState,
        stages: Sequence[CompressionStage] = (),
        cache: Any | None = None,
    ) -> BackboneOutput:
        """Run every layer on (B, T, D) ``hidden``; before layer l apply the stages at l."""
        by_layer: dict[int, list[CompressionStage]] = {}
        for stage in stages:
            by_layer.setdefault(stage.layer, []).append(stage)
        records: list[StageRecord] = []
        for index in range(self.num_layers):
            for stage in by_layer.get(index, []):
                before = int(state.vision_mask().sum())
                hidden, state = stage(hidden, state, self)
                records.append(
                    StageRecord(stage.describe(), index, before, int(state.vision_mask().sum()), state.length)
                )
            hidden = self.run_layer(index, hidden, state, cache)
        return BackboneOutput(self.final_norm(hidden), state, records)

    @torch.no_grad()
    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
