"""Nemotron-H: a hybrid stack of Mamba-2, attention and MLP layers (any pattern string).

``pattern`` has one character per layer: 'M' Mamba-2, '*' attention, '-' MLP (squared ReLU);
e.g. Nemotron-Nano-9B-v2 is ``M-M-M-MM-M-M-M*-...``. Module and parameter names match
transformers' ``NemotronHForCausalLM`` without the ``model.``/``backbone.`` prefix, so Hugging Face
checkpoints load by key (:func:`lightning_viper.backbones.nemotron_h_loading.load_nemotron_h`).
Attention has no positional encoding: token order is carried by the Mamba layers.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.base import Backbone, LayerKind
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.nemotron_layers import HybridBlock, SquaredReLUMLP
from lightning_viper.backbones.norm import RMSNorm
from lightning_viper.ops.kernels import KernelChoice

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
        self.set_runtime(gradient_checkpointing, prefill_chunk)
        self.pattern = pattern
        self.layer_kinds = parse_pattern(pattern)
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.tie_word_embeddings = tie_word_embeddings
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
                mixer = GQAttention(
                    hidden_size, num_attention_heads, num_key_value_heads, head_dim, attention_bias, attention_bias
                )
            else:
                mixer = SquaredReLUMLP(hidden_size, intermediate_size, mlp_bias, mlp_hidden_act)
            blocks.append(HybridBlock(kind, mixer, hidden_size, layer_norm_epsilon, kernels))
        self.layers = nn.ModuleList(blocks)
        self.norm_f = RMSNorm(hidden_size, layer_norm_epsilon, weight_in_float32=True, kernels=kernels)
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

    def attention_module(self, layer: int) -> GQAttention:
        mixer = self.block(layer).mixer
        if not isinstance(mixer, GQAttention):
            self.require_attention_layer(layer, type(self).__name__)
            raise TypeError(f"layer {layer} is marked 'attention' but holds a {type(mixer).__name__}")
        return mixer

    def attention_norm(self, layer: int) -> RMSNorm:
        self.attention_module(layer)  # checks that the layer has attention
        return self.block(layer).norm
