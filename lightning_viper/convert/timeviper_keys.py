"""The TimeViper reference's state-dict names -> ours, with every source key accounted for.

Source prefixes (one plain state dict):

* ``vision_backbone.featurizer.*``: a timm SigLIP ViT. ``patch_embed.proj`` -> the HF tower's
  ``embeddings.patch_embedding``; ``pos_embed`` (1, P, D) -> ``embeddings.position_embedding``
  (P, D); ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` -> ``encoder.layers.N.
  {layer_norm1, self_attn.{q,k,v}_proj (qkv split in three), self_attn.out_proj, layer_norm2,
  mlp.fc1, mlp.fc2}``. Dropped and reported: ``attn_pool.*`` (unused pooling head), ``norm.*``
  (features are taken before it) and the blocks after the feature block.
* ``projector.projector.{0,2}`` -> the projector's ``mlp.fc1`` / ``mlp.fc2``.
* ``llm_backbone.llm.backbone.*`` -> ``backbone.*`` (the reference's ``embedding.`` spelling is
  read as ``embeddings.``), ``llm_backbone.llm.lm_head`` -> ``backbone.lm_head``.
* ``llm_backbone.llm.backbone.merge_modules.K.*`` -> ``compression.K.*`` and
  ``llm_backbone.llm.backbone.alpha[K]`` -> ``compression.K.alpha`` (the reference indexes its
  gate vector by stage).

Any other key is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from lightning_viper.backbones.loading import CheckpointError

VISION = "vision_backbone.featurizer."
PROJECTOR = "projector.projector."
LLM = "llm_backbone.llm.backbone."
HEAD = "llm_backbone.llm.lm_head."
MERGE = LLM + "merge_modules."
ALPHA = LLM + "alpha"

BLOCK_NAMES = {
    "norm1": "layer_norm1",
    "attn.proj": "self_attn.out_proj",
    "norm2": "layer_norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
BLOCK = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass
class KeyMap:
    """The converted tensors and what happened to every source key."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)  # source -> our key(s), comma separated
    dropped: dict[str, str] = field(default_factory=dict)  # source -> why
    unmapped: list[str] = field(default_factory=list)

    def put(self, source: str, ours: str, value: Tensor) -> None:
        self.tensors[ours] = value
        self.mapped[source] = f"{self.mapped[source]}, {ours}" if source in self.mapped else ours

    def report(self) -> dict[str, object]:
        return {"mapped": len(self.mapped), "dropped": dict(sorted(self.dropped.items()))}


def map_vision(key: str, value: Tensor, tower: str, kept_blocks: int, out: KeyMap) -> None:
    """One ``vision_backbone.featurizer.`` key (without the prefix); ``tower`` is our prefix."""
    source = VISION + key
    if key.startswith("attn_pool."):
        out.dropped[source] = "timm's attention-pooling head: TimeViper uses patch features, not the pooled one"
    elif key in ("norm.weight", "norm.bias"):
        out.dropped[source] = "final norm: features are the feature block's output without it"
    elif key in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
        out.put(source, f"{tower}embeddings.patch_embedding.{key.rsplit('.', 1)[1]}", value)
    elif key == "pos_embed":
        out.put(source, f"{tower}embeddings.position_embedding.weight", value.reshape(value.shape[-2:]))
    elif (m := BLOCK.match(key)) is not None:
        index, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if index >= kept_blocks:
            out.dropped[source] = f"block {index} runs after the feature block {kept_blocks - 1}"
            return
        layer = f"{tower}encoder.layers.{index}."
        if name == "attn.qkv":
            for part, chunk in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                out.put(source, f"{layer}self_attn.{part}_proj.{kind}", chunk.contiguous())
        elif name in BLOCK_NAMES:
            out.put(source, f"{layer}{BLOCK_NAMES[name]}.{kind}", value)
        else:
            out.unmapped.append(source)
    else:
        out.unmapped.append(source)


def map_state(
    state: Mapping[str, Tensor], tower: str, kept_blocks: int, transfer_stages: list[int], projector: str
) -> KeyMap:
    """Map every source key (module docstring); raise :class:`CheckpointError` on any unmapped one.

    Args:
        tower: our key prefix of the vision tower's HF names (e.g. ``encoder.model.``).
        kept_blocks: vision blocks our tower keeps (feature block + 1).
        transfer_stages: indices of the compression stages that are TransV (have weights).
        projector: our projector's prefix (``projector.mlp.``).
    """
    out = KeyMap()
    for key, value in state.items():
        if key.startswith(VISION):
            map_vision(key[len(VISION) :], value, tower, kept_blocks, out)
        elif key.startswith(PROJECTOR):
            index, _, rest = key[len(PROJECTOR) :].partition(".")
            names = {"0": "fc1", "2": "fc2"}
            if index in names:
                out.put(key, f"{projector}{names[index]}.{rest}", value)
            else:
                out.unmapped.append(key)
        elif key.startswith(MERGE):
            index, _, rest = key[len(MERGE) :].partition(".")
            if index.isdigit() and int(index) in transfer_stages:
                out.put(key, f"compression.{index}.{rest}", value)
            else:
                out.unmapped.append(key)
        elif key == ALPHA:
            for stage in transfer_stages:
                if stage >= value.numel():
                    raise CheckpointError(
                        f"{ALPHA} has {value.numel()} gates but stage {stage} transfers: the checkpoint does not "
                        "match its config's pdrop_type"
                    )
                out.put(key, f"compression.{stage}.alpha", value.reshape(-1)[stage].clone())
        elif key.startswith(LLM):
            rest = key[len(LLM) :]
            if rest.startswith("embedding."):
                rest = "embeddings." + rest[len("embedding.") :]
            out.put(key, f"backbone.{rest}", value)
        elif key.startswith(HEAD):
            out.put(key, f"backbone.lm_head.{key[len(HEAD) :]}", value)
        else:
            out.unmapped.append(key)
    if out.unmapped:
        raise CheckpointError(
            f"{len(out.unmapped)} source key(s) have no counterpart here: {sorted(out.unmapped)[:12]}; "
            "this is not the TimeViper (SigLIP + ToMe MLP + Nemotron-Nano) layout this converter reads"
        )
    return out
