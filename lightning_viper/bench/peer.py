"""The stock transformers peer: ``NemotronHForCausalLM`` sharing our backbone's weight tensors.

The peer is built on the meta device and its parameters are *assigned* our tensors (no copy, no
extra memory), so both run the very same weights. transformers picks its own kernels: mamba-ssm
and causal-conv1d when installed, else its PyTorch fallback; its attention runs on the SDPA
backends ours may use (``ops.attention.SDPA_BACKENDS``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import sdpa_kernel

from lightning_viper.backbones.attention import GQAttention
from lightning_viper.backbones.mamba2 import Mamba2Mixer
from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.backbones.nemotron_layers import SquaredReLUMLP
from lightning_viper.ops.attention import SDPA_BACKENDS


def _first(module: nn.Module, kind: type) -> Any:
    return next((m for m in module.modules() if isinstance(m, kind)), None)


def hf_config(backbone: NemotronHBackbone) -> Any:
    """A transformers ``NemotronHConfig`` describing ``backbone``."""
    from transformers import NemotronHConfig

    mamba: Mamba2Mixer | None = _first(backbone, Mamba2Mixer)
    attn: GQAttention | None = _first(backbone, GQAttention)
    mlp: SquaredReLUMLP | None = _first(backbone, SquaredReLUMLP)
    kw: dict[str, Any] = dict(
        hybrid_override_pattern=backbone.pattern,
        hidden_size=backbone.hidden_size,
        vocab_size=backbone.vocab_size,
        layer_norm_epsilon=backbone.norm_f.eps,
        tie_word_embeddings=backbone.tie_word_embeddings,
        mlp_hidden_act="relu2",
        use_cache=True,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    if mamba is not None:
        kw.update(
            mamba_num_heads=mamba.num_heads,
            mamba_head_dim=mamba.head_dim,
            ssm_state_size=mamba.state_size,
            n_groups=mamba.n_groups,
            conv_kernel=int(mamba.conv1d.kernel_size[0]),
            chunk_size=mamba.chunk_size,
            use_bias=mamba.in_proj.bias is not None,
            use_conv_bias=mamba.conv1d.bias is not None,
            time_step_min=float(mamba.time_step_limit[0]),
        )
    if attn is not None:
        kw.update(
            num_attention_heads=attn.num_heads,
            num_key_value_heads=attn.num_kv_heads,
            head_dim=attn.head_dim,
            attention_bias=attn.q_proj.bias is not None,
        )
    if mlp is not None:
        kw.update(intermediate_size=mlp.up_proj.out_features, mlp_bias=mlp.up_proj.bias is not None)
    return NemotronHConfig(**kw)


def hf_peer(backbone: NemotronHBackbone) -> nn.Module:
    """``NemotronHForCausalLM`` in eval mode whose parameters ARE ``backbone``'s tensors."""
    from transformers import NemotronHForCausalLM

    config = hf_config(backbone)
    with torch.device("meta"):
        peer = NemotronHForCausalLM(config)
    names = list(peer.state_dict())
    prefix = next(n[: -len("embeddings.weight")] for n in names if n.endswith("embeddings.weight"))
    ours = backbone.state_dict(keep_vars=True)
    mapped = {("lm_head.weight" if k == "lm_head.weight" else prefix + k): v for k, v in ours.items()}
    peer.load_state_dict(mapped, strict=True, assign=True)
    left = [n for n, t in [*peer.named_parameters(), *peer.named_buffers()] if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"transformers' NemotronH has tensors our backbone does not provide: {left[:5]}")
    return peer.eval()


@torch.no_grad()
def hf_prefill(peer: nn.Module, hidden: Tensor) -> Tensor:
    """(1, T, D) input embeddings -> (1,) first token, as ``generate`` prefills (cache on, last logits only)."""
    with sdpa_kernel(SDPA_BACKENDS):  # the attention kernels ours use (cuDNN's is left out)
        out = peer(inputs_embeds=hidden, use_cache=True, logits_to_keep=1)
    token: Tensor = out.logits[:, -1].argmax(-1)
    return token
