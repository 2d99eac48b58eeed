"""Nemotron-H: a hybrid stack of Mamba-2, attention and MLP layers (any pattern string).

``pattern`` has one character per layer: 'M' Mamba-2, '*' attention, '-' MLP (squared ReLU);
e.g. Nemotron-Nano-9B-v2 is ``M-M-M-MM-M-M-M*-...``. Module and parameter names match
transformers' ``NemotronHForCausalLM`` without the ``model.``/``backbone.`` prefix, so Hugging Face
checkpoints load by key (:func:`lightning_viper.backbones.nemotron_h_loading.load_nemotron_h`).
Attention has no positional encoding: token order is carried by the Mamba layers.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_viper.backbones.base import Backbone, LayerKind
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.nemotron_cache import HybridCache, LayerCache
from lightning_viper.backbones.nemotron_layers import HybridAttention, HybridBlock, RMSNorm, SquaredReLUMLP
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.sequence import SequenceState

PATTERN_KINDS: dict[str, LayerKind] = {"M": "mamba", "*": "attention", "-": "mlp"}


def parse_pattern(pattern: str) -> tuple[LayerKind, ...]:
    """'M-*' -> ('mamba', 'mlp', 'attention'); raises on any other character (e.g. MoE 'E')."""
    bad = sorted({ch for ch in pattern if ch not in PATTERN_KINDS})
    if bad or not pattern:
        raise ValueError(
            f"hybrid pattern {pattern!r}: use only 'M' (Mamba-2), '*' (attention) and '-' (MLP); "
            f"unsupported characters {bad} (MoE 'E' layers are not implemented)"
        )
    return tuple(PATTERN_KINDS[ch] for ch in pattern)


class NemotronHBackbone(Backbone):
    """Hybrid Mamba-2 / attention / MLP language model (see the module docstring).

    Runtime options: ``gradient_checkpointing`` recomputes each layer in backward (training,
    no cache); ``prefill_chunk`` runs every layer over the sequence in chunks of that many tokens
    (layer-major, so compression stages still see the whole sequence between layers) to bound
    activation memory; ``kernels`` picks mamba-ssm / causal-conv1d ('cuda'), plain PyTorch
    ('torch'), or the kernels when installed and on CUDA ('auto').
    """

    def __init__(
        self,
        pattern: str = "M-*M-",
        hidden_size: int = 64,
        vocab_size: int = 256,
        num_attention_heads: int = 4,
        num_key_value_heads: int = 2,
        head_dim: int = 16,
        mamba_num_heads: int = 8,
        mamba_head_dim: int = 16,
        ssm_state_size: int = 16,
        n_groups: int = 2,
        conv_kernel: int = 4,
        chunk_size: int = 64,
        intermediate_size: int = 128,
        mlp_hidden_act: str = "relu2",
        layer_norm_epsilon: float = 1e-5,
        tie_word_embeddings: bool = False,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        mlp_bias: bool = False,
        attention_bias: bool = False,
        time_step_limit: tuple[float, float] = (0.001, math.inf),
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        initializer_range: float = 0.02,
        gradient_checkpointing: bool = False,
        prefill_chunk: int | None = None,
        kernels: KernelChoice = "auto",
    ) -> None:
        super().__init__()
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be a positive number of tokens or None, got {prefill_chunk}")
        self.pattern = pattern
        self.layer_kinds = parse_pattern(pattern)
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.tie_word_embeddings = tie_word_embeddings
        self.gradient_checkpointing = gradient_checkpointing
        self.prefill_chunk = prefill_chunk
        self.initializer_range = initializer_range
        self.embeddings = nn.Embedding(vocab_size, hidden_size)
        blocks = []
        for kind in self.layer_kinds:
            mixer: nn.Module
            if kind == "mamba":
                mixer = Mamba2Mixer(
                    hidden_size, mamba_num_heads, mamba_head_dim, ssm_state_size, n_groups, conv_kernel,
                    chunk_size, layer_norm_epsilon, use_bias, use_conv_bias, tuple(time_step_limit),  # type: ignore[arg-type]
                    (time_step_min, time_step_max, time_step_floor), kernels,
                )  # fmt: skip
            elif kind == "attention":
                mixer = HybridAttention(hidden_size, num_attention_heads, num_key_value_heads, head_dim, attention_bias)
            else:
                mixer = SquaredReLUMLP(hidden_size, intermediate_size, mlp_bias, mlp_hidden_act)
            blocks.append(HybridBlock(kind, mixer, hidden_size, layer_norm_epsilon))
        self.layers = nn.ModuleList(blocks)
        self.norm_f = RMSNorm(hidden_size, layer_norm_epsilon)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) linear/embedding weights, zero biases, Mamba SSM init."""
        if self.embeddings.weight.device.type == "meta":
            return
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=self.initializer_range)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, Mamba2Mixer):
                module.reset_ssm_parameters()

    def tie_weights(self) -> None:
        """Share the embedding matrix with the LM head when ``tie_word_embeddings``."""
        if self.tie_word_embeddings:
            self.lm_head.weight = self.embeddings.weight

    def block(self, index: int) -> HybridBlock:
        """The residual block of layer ``index``."""
        return cast(HybridBlock, self.layers[index])

    # --- Backbone contract -------------------------------------------------------------------
    def embed(self, input_ids: Tensor) -> Tensor:
        out: Tensor = self.embeddings(input_ids)  # (B, T, D)
        return out

    def final_norm(self, hidden: Tensor) -> Tensor:
        out: Tensor = self.norm_f(hidden)
        return out

    def logits(self, hidden: Tensor) -> Tensor:
        out: Tensor = self.lm_head(hidden.to(self.lm_head.weight.dtype))  # (..., V)
        return out

    def run_layer(self, index: int, hidden: Tensor, state: SequenceState, cache: Any | None) -> Tensor:
        """Layer ``index`` on (B, T, D) ``hidden``; fills ``cache`` (a :class:`HybridCache`) if given."""
        layer_cache: LayerCache = None
        if cache is not None:
            if not isinstance(cache, HybridCache):
                raise TypeError(f"NemotronHBackbone needs a HybridCache from new_cache(), got {type(cache).__name__}")
            layer_cache = cache.layers[index]
            cache.last_segment = state.segment[:, -1].clone()
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and cache is None:
            out: Tensor = checkpoint(
                self._run_chunked, index, hidden, state.mask, state.segment, None, use_reentrant=False
            )
            return out
        return self._run_chunked(index, hidden, state.mask, state.segment, layer_cache)

    def _run_chunked(
        self, index: int, hidden: Tensor, mask: Tensor, segment: Tensor, layer_cache: LayerCache
    ) -> Tensor:
        """Run one block, over ``prefill_chunk``-token pieces carrying its state when set."""
        block = self.block(index)
        t = hidden.shape[1]
        step = self.prefill_chunk
        if step is None or t <= step:
            out: Tensor = block(hidden, mask, segment, layer_cache)
            return out
        if layer_cache is None:
            layer_cache = block.new_cache()  # scratch state, dropped after this layer
        pieces = [
            block(hidden[:, s : s + step], mask[:, s : s + step], segment[:, s : s + step], layer_cache)
            for s in range(0, t, step)
        ]
        return torch.cat(pieces, 1)

    def attention_module(self, layer: int) -> nn.Module:
        block = self.block(layer)
        if not isinstance(block.mixer, HybridAttention):
            raise ValueError(
                f"layer {layer} is a {self.layer_kinds[layer]} layer; attention layers are "
                f"{[i for i, k in enumerate(self.layer_kinds) if k == 'attention']}"
            )
        return block.mixer

    def attention_scores(self, layer: int, hidden: Tensor, state: SequenceState) -> Tensor:
        """(B, T) float32: head-averaged softmax attention of each segment's query token over the
        causal keys of its own segment, from layer ``layer``'s pre-norm and q/k projections."""
        attn = self.attention_module(layer)
        assert isinstance(attn, HybridAttention)
        normed = self.block(layer).norm(hidden.to(self.block(layer).norm.weight.dtype))  # (B, T, D)
        qcol = state.query_index()  # (S,)
        rows = state.segment_row  # (S,)
        rep = attn.num_heads // attn.num_kv_heads
        k = attn.heads(attn.k_proj, normed)  # (B, Hkv, T, hd), computed once for all segments
        q = attn.heads(attn.q_proj, normed[rows, qcol].unsqueeze(1)).float()  # (S, Hq, 1, hd)
        q = q.view(q.shape[0], attn.num_kv_heads, rep, attn.head_dim)  # (S, Hkv, R, hd) query heads by group
        cols = torch.arange(state.length, device=hidden.device)
        out = torch.zeros(state.batch_size, state.length, dtype=torch.float32, device=hidden.device)
        for sid, (row, col) in enumerate(zip(rows.tolist(), qcol.tolist(), strict=True)):  # S is small
            scores = (q[sid] @ k[row].float().transpose(-1, -2)).flatten(0, 1) * attn.scale  # (Hq, T)
            allowed = (state.segment[row] == sid) & state.mask[row] & (cols <= col)  # (T,)
            probs = scores.masked_fill(~allowed, -math.inf).softmax(-1).mean(0)  # (T,)
            out[row] += probs.masked_fill(~allowed, 0.0)
        return out

    def new_cache(self, batch_size: int) -> HybridCache:
        return HybridCache(batch_size, [self.block(i).new_cache() for i in range(self.num_layers)])

    def decode(self, hidden: Tensor, cache: Any) -> Tensor:
        """(B, 1, D) embeddings of one new token per row -> (B, 1, D) final-normed hidden."""
        if not isinstance(cache, HybridCache) or cache.last_segment is None:
            raise RuntimeError("decode needs a HybridCache filled by forward(..., cache=cache) (the prefill)")
        segment = cache.last_segment.unsqueeze(1)  # (B, 1)
        for index in range(self.num_layers):
            hidden = self.block(index).step(hidden, segment, cache.layers[index])
        return self.final_norm(hidden)
