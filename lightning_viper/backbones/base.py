"""The backbone contract: an LLM that owns its layer loop so compression can act between layers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_viper.backbones.attention import AttentionLayer, GQAttention
from lightning_viper.backbones.cache import BackboneCache, KVCache, LayerCache
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.backbones.scores import query_attention
from lightning_viper.ops.attention import RowLayout, row_layout
from lightning_viper.ops.profiling import region
from lightning_viper.sequence import SequenceState

if TYPE_CHECKING:
    from lightning_viper.compression.base import CompressionStage

LayerKind = Literal["mamba", "attention", "mlp", "decoder"]
"""Kinds of layers: Nemotron-H mixes mamba / attention / mlp; a Transformer layer is 'decoder'
(attention + MLP in one block). Attention-guided selection needs 'attention' or 'decoder'."""


@dataclass
class StageRecord:
    """What one compression stage did in one forward pass (summed over the batch).

    The counts stay on the device until read (``vision_before`` / ``vision_after``), so recording
    a stage adds no host sync to the forward."""

    name: str
    layer: int
    before: Tensor  # () long: vision tokens before the stage
    after: Tensor  # () long: vision tokens after it

    @property
    def vision_before(self) -> int:
        return int(self.before)

    @property
    def vision_after(self) -> int:
        return int(self.after)


@dataclass
class BackboneOutput:
    hidden: Tensor  # (B, T', D), after the final norm
    state: SequenceState  # bookkeeping of the T' tokens that reached the last layer
    stages: list[StageRecord] = field(default_factory=list)


class BackboneLayer(Protocol):
    """The contract every layer of ``Backbone.layers`` follows (see :class:`Backbone`)."""

    def __call__(
        self,
        hidden: Tensor,
        mask: Tensor,
        segment: Tensor,
        position: Tensor | None,
        cache: Any = None,
        layout: RowLayout | None = None,
    ) -> Tensor: ...

    def step(self, hidden: Tensor, segment: Tensor, cache: Any) -> Tensor: ...

    def new_cache(self, max_length: int | None = None) -> LayerCache: ...


class MixerOverride(Protocol):
    """Replaces the token mixer of one layer for one forward pass (``Backbone.forward(mixers=...)``);
    the analysis (:mod:`lightning_viper.analysis`) knocks out edges and reads attention maps so."""

    def __call__(self, index: int, mixer: nn.Module, x: Tensor, state: SequenceState) -> Tensor:
        """``mixer``: layer ``index``'s own ``GQAttention`` or ``Mamba2Mixer``; ``x`` (B, T, D): its
        normed input; ``state``: the tokens the layer sees -> the mixer's output (B, T, D)."""
        ...


class _OverriddenMixer(nn.Module):
    """Stands in for a layer's mixer while an override runs (the layer's block calls it as its mixer)."""

    def __init__(self, index: int, mixer: nn.Module, override: MixerOverride, state: SequenceState) -> None:
        super().__init__()
        self.index, self.override, self.state = index, override, state
        self.original = (mixer,)  # a tuple: not registered as a submodule of the stand-in

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        segment: Tensor,
        cache: Any = None,
        position: Tensor | None = None,
        layout: RowLayout | None = None,
    ) -> Tensor:
        return self.override(self.index, self.original[0], x, self.state)


class Backbone(nn.Module, ABC):
    """An LLM as a stack of layers, an embedding, a final norm and an LM head.

    A family builds ``self.layers`` (an ``nn.ModuleList``), sets ``layer_kinds`` and implements
    ``embed``, ``final_norm``, ``logits``, ``attention_module`` and ``attention_norm``. The layer
    loop, chunked prefill, gradient checkpointing, the generation cache, decoding and attention
    scores are shared. Every layer follows one contract:

    * ``layer(hidden, mask, segment, position, cache, layout)``: (B, T, D) -> (B, T, D), residual
      included; appends what it saw to ``cache`` (its own entry of the :class:`BackboneCache`) when
      given; ``layout`` is the host-side :class:`~lightning_viper.ops.attention.RowLayout` of the
      keys its attention sees (None: unknown, read from the device);
    * ``layer.step(hidden, segment, cache)``: one new token per row, (B, 1, D) -> (B, 1, D), with
      no host sync (with static caches, no shape change either: CUDA-graph safe);
    * ``layer.new_cache(max_length)``: its empty cache entry (a ``KVCache``, static when
      ``max_length`` is set, a ``MambaLayerCache`` or None).
    """

    hidden_size: int
    vocab_size: int
    layer_kinds: tuple[LayerKind, ...]
    layers: nn.ModuleList
    gradient_checkpointing: bool = False
    prefill_chunk: int | None = None
    _layout_memo: tuple[SequenceState, RowLayout | None] | None = None  # layout_of's, during one forward

    def set_runtime(self, gradient_checkpointing: bool, prefill_chunk: int | None) -> None:
        """``gradient_checkpointing`` recomputes each layer in backward (training, no cache);
        ``prefill_chunk`` runs every layer over the sequence in chunks of that many tokens
        (layer-major, so compression stages still see the whole sequence between layers)."""
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be a positive number of tokens or None, got {prefill_chunk}")
        self.gradient_checkpointing = gradient_checkpointing
        self.prefill_chunk = prefill_chunk

    def layer_at(self, index: int) -> BackboneLayer:
        return cast(BackboneLayer, self.layers[index])

    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    def is_attention_layer(self, layer: int) -> bool:
        return self.layer_kinds[layer] in ("attention", "decoder")

    @property
    def attention_layers(self) -> list[int]:
        return [i for i in range(self.num_layers) if self.is_attention_layer(i)]

    def require_attention_layer(self, layer: int, who: str) -> None:
        """Raise ``ValueError`` naming ``who`` (e.g. a stage's ``describe()``) unless ``layer`` has attention."""
        if not self.is_attention_layer(layer):
            raise ValueError(
                f"{who}: attention-guided selection needs an attention layer, but layer {layer} is "
                f"{self.layer_kinds[layer]!r}; attention layers of this backbone: {self.attention_layers}"
            )

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
    def attention_module(self, layer: int) -> GQAttention:
        """The attention mixer of attention layer ``layer``."""

    @abstractmethod
    def attention_norm(self, layer: int) -> RMSNorm:
        """The pre-norm applied to the input of attention layer ``layer`` before its projections."""

    def attention_layer(self, layer: int) -> AttentionLayer:
        """The typed view of attention layer ``layer`` that compression stages read."""
        self.require_attention_layer(layer, type(self).__name__)
        return AttentionLayer(layer, self.attention_module(layer), self.attention_norm(layer))

    def mixer_name(self, layer: int) -> str:
        """Attribute name of layer ``layer``'s token mixer (a ``GQAttention`` or ``Mamba2Mixer`` child)."""
        for name, child in self.layers[layer].named_children():
            if isinstance(child, GQAttention | Mamba2Mixer):
                return name
        raise ValueError(
            f"layer {layer} ({self.layer_kinds[layer]!r}) has no token mixer (attention or Mamba-2); "
            f"layers with one: {[i for i, k in enumerate(self.layer_kinds) if k != 'mlp']}"
        )

    # --- the shared layer loop -----------------------------------------------------------------
    def layout_of(self, state: SequenceState) -> RowLayout | None:
        """:func:`~lightning_viper.ops.attention.row_layout` of ``state``, computed once per state
        object (one host sync) and reused by every layer that sees it."""
        memo = self._layout_memo
        if memo is not None and memo[0] is state:
            return memo[1]
        layout = row_layout(state.mask, state.segment)
        self._layout_memo = (state, layout)
        return layout

    def run_layer(
        self, index: int, hidden: Tensor, state: SequenceState, cache: Any | None, overwrite: bool = False
    ) -> Tensor:
        """Apply layer ``index`` (residual included) to (B, T, D) -> (B, T, D); fills ``cache``
        (a :class:`BackboneCache` from ``new_cache``) when given. ``overwrite``: ``hidden`` is
        not needed afterwards, so chunked inference may write the output over it. Its attention
        gets ``state``'s layout from :meth:`layout_of` (one sync per state, not per layer)."""
        layout = self.layout_of(state)
        layer_cache: LayerCache = None
        if cache is not None:
            if not isinstance(cache, BackboneCache):
                raise TypeError(
                    f"{type(self).__name__} needs a BackboneCache from new_cache(), got {type(cache).__name__}"
                )
            layer_cache = cache.layers[index]
        args = (index, hidden, state.mask, state.segment, state.position)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and cache is None:
            out: Tensor = checkpoint(self._run_chunked, *args, None, False, layout, use_reentrant=False)
            return out
        return self._run_chunked(*args, layer_cache, overwrite, layout)

    def _run_chunked(
        self,
        index: int,
        hidden: Tensor,
        mask: Tensor,
        segment: Tensor,
        position: Tensor,
        layer_cache: LayerCache,
        overwrite: bool = False,
        layout: RowLayout | None = None,
    ) -> Tensor:
        """Run one layer, over ``prefill_chunk``-token pieces carrying its cache when set;
        ``overwrite``: without autograd, chunked outputs may be written over ``hidden``.
        ``layout`` (of the T tokens) becomes the layout of each call's keys while the cache
        holds only this forward's tokens (a cache that held keys before: unknown, None)."""
        layer = self.layer_at(index)
        t = hidden.shape[1]
        step = self.prefill_chunk
        if isinstance(layer_cache, KVCache) and layer_cache.length > 0:
            layout = None
        if step is None or t <= step:
            out: Tensor = layer(hidden, mask, segment, position, layer_cache, layout)
            return out
        if layer_cache is None:
            layer_cache = layer.new_cache()  # scratch state, dropped after this layer

        def keys(end: int) -> RowLayout | None:  # the keys of the piece ending at column ``end``
            return None if layout is None else layout.prefix(t, min(end, t))

        if torch.is_grad_enabled():  # autograd keeps every piece anyway
            pieces = [
                layer(hidden[:, s : s + step], mask[:, s : s + step], segment[:, s : s + step],
                      position[:, s : s + step], layer_cache, keys(s + step))
                for s in range(0, t, step)
            ]  # fmt: skip
            return torch.cat(pieces, 1)
        # inference: each piece's output goes straight into one buffer (no list + cat doubling);
        # into ``hidden`` itself when the caller allows it (a piece only reads its own input
        # columns, earlier columns reach it through the cache)
        out = hidden if overwrite else torch.empty_like(hidden)
        for s in range(0, t, step):
            out[:, s : s + step] = layer(
                hidden[:, s : s + step],
                mask[:, s : s + step],
                segment[:, s : s + step],
                position[:, s : s + step],
                layer_cache,
                keys(s + step),
            )
        return out

    def forward(
        self,
        hidden: Tensor,
        state: SequenceState,
        stages: Sequence[CompressionStage] = (),
        cache: Any | None = None,
        mixers: Mapping[int, MixerOverride] | None = None,
        donate: bool = False,
    ) -> BackboneOutput:
        """Run every layer on (B, T, D) ``hidden``; before layer l apply the stages at l.

        ``mixers`` maps layer indices to overrides of their token mixer (whole sequence, no
        cache, no chunking); None (the default) runs every layer as it is. ``donate``: the caller
        will not read ``hidden`` again, so chunked inference may write the first layer's output
        over it (one whole-sequence buffer less: 13.7 GiB at 100k frames on the 9B), and a stage's
        shorter output is moved to the front of that buffer (the callers' references keep it alive,
        so the shorter copy would be a second one: 13.7 GiB at 200k frames after TransV's first
        stage); otherwise the caller's tensor is never written."""
        if mixers and cache is not None:
            raise ValueError("mixer overrides run without a generation cache: pass cache=None")
        by_layer: dict[int, list[CompressionStage]] = {}
        for stage in stages:
            by_layer.setdefault(stage.layer, []).append(stage)
        records: list[StageRecord] = []
        given = None if donate else hidden  # not written unless donated; the loop's own intermediates may be
        donated = hidden.untyped_storage().data_ptr() if donate else None
        try:
            for index in range(self.num_layers):
                for stage in by_layer.get(index, []):
                    before = state.vision_mask().sum()
                    with region(f"stage/L{index}_{type(stage).__name__}"):
                        shorter, state = stage(hidden, state, self)
                    hidden = self._into_donated(hidden, shorter, donated)
                    records.append(StageRecord(stage.describe(), index, before, state.vision_mask().sum()))
                override = mixers.get(index) if mixers else None
                with region(f"layer/{self.layer_kinds[index]}"):
                    if override is None:
                        chunked = self.prefill_chunk is not None and hidden.shape[1] > self.prefill_chunk
                        if chunked and hidden is not given and not torch.is_grad_enabled():
                            hidden = self.run_layer(index, hidden, state, cache, overwrite=True)
                        else:
                            hidden = self.run_layer(index, hidden, state, cache)
                    else:
                        hidden = self._run_overridden(index, hidden, state, override)
        finally:
            self._layout_memo = None  # holds the state only while this forward runs
        if isinstance(cache, BackboneCache):
            cache.last_segment = state.segment[:, -1].clone()  # the segment each row's next token continues
        return BackboneOutput(self.final_norm(hidden), state, records)

    def _into_donated(self, old: Tensor, new: Tensor, donated: int | None) -> Tensor:
        """``new`` (a stage's output) copied into the front of ``old`` when ``old`` lives in the
        donated buffer of a chunked inference forward and ``new`` is a smaller, separate tensor;
        else ``new`` itself. The copy (B, T', D) is a contiguous view of that buffer."""
        if (
            donated is None
            or torch.is_grad_enabled()
            or self.prefill_chunk is None
            or old.untyped_storage().data_ptr() != donated
            or new.untyped_storage().data_ptr() == donated
            or new.numel() >= old.numel()
            or new.dtype != old.dtype
            or not old.is_contiguous()
        ):
            return new
        into = old.reshape(-1)[: new.numel()].view(new.shape)  # (B, T', D), a view: reshape of a contiguous tensor
        into.copy_(new)
        return into

    def _run_overridden(self, index: int, hidden: Tensor, state: SequenceState, override: MixerOverride) -> Tensor:
        """Layer ``index`` with its mixer replaced by ``override`` for this call only."""
        layer, name = self.layers[index], self.mixer_name(index)
        mixer = getattr(layer, name)
        setattr(layer, name, _OverriddenMixer(index, mixer, override, state))
        try:
            out: Tensor = layer(hidden, state.mask, state.segment, state.position, None)
        finally:
            setattr(layer, name, mixer)
        return out

    # --- generation ----------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_length: int | None = None) -> Any:
        """An empty generation cache; ``forward(..., cache=c)`` fills it during prefill.

        ``max_length`` (prompt + new tokens) makes every attention layer's KV cache static: a
        decode step then keeps its shapes and can be captured in a CUDA graph."""
        return BackboneCache(batch_size, [self.layer_at(i).new_cache(max_length) for i in range(self.num_layers)])

    def decode(self, hidden: Tensor, cache: Any) -> Tensor:
        """One generation step: (B, 1, D) new embeddings appended on the right -> (B, 1, D)
        final-normed hidden. Updates ``cache``; no host sync (with a static cache no shape change
        either, so the step can be captured in a CUDA graph)."""
        if not isinstance(cache, BackboneCache) or cache.last_segment is None:
            raise RuntimeError("decode needs a BackboneCache filled by forward(..., cache=cache) (the prefill)")
        if hidden.shape[0] != cache.batch_size or hidden.shape[1] != 1:
            raise ValueError(f"decode takes (B={cache.batch_size}, 1, D) embeddings, got {tuple(hidden.shape)}")
        segment = cache.last_segment.unsqueeze(1)  # (B, 1)
        for index in range(self.num_layers):
            hidden = self.layer_at(index).step(hidden, segment, cache.layers[index])
        return self.final_norm(hidden)

    # --- attention scores ----------------------------------------------------------------------
    @torch.no_grad()
    def attention_scores(
        self, layer: int, hidden: Tensor, state: SequenceState, queries: Tensor | None = None
    ) -> Tensor:
        """Attention that query tokens pay to every token of their own segment at attention layer
        ``layer``, from the layer's own pre-norm and (rotary) q/k projections on ``hidden`` (B, T, D),
        the input of that layer: softmax over each query's causal keys in its segment, averaged
        over heads and over the segment's query tokens.

        ``queries`` (B, T) bool picks the query tokens; None = each segment's query token
        (``state.query_index()``). Returns (B, T) float32, 0 outside the segments' causal pasts.
        """
        return query_attention(self.attention_layer(layer), hidden, state, queries)

    @torch.no_grad()
    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
