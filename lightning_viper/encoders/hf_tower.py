"""Shared machinery for vision encoders wrapping a transformers vision tower (SigLIP, CLIP).

A tower is frozen by default (no gradients, kept in eval mode even when the surrounding module
trains), runs frames in micro-batches, and returns the hidden states of one encoder layer
(``feature_layer``, counted like Python indices over the L layer outputs: -1 = last, -2 =
second-to-last), before any post-layernorm or pooling head.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.encoders.base import VisionEncoder
from lightning_viper.encoders.batching import map_frames
from lightning_viper.encoders.vit_layer import ViTLayers

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"


def torch_dtype(name: str) -> torch.dtype:
    """'float32' / 'bfloat16' / 'float16' -> torch dtype, with a clear error otherwise."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {name!r} is not a torch dtype name (use 'float32', 'bfloat16' or 'float16')")
    return dtype


def vision_checkpoint_dir(path: str, family: str) -> Path:
    """A local checkpoint directory with a config.json, or :class:`CheckpointError` naming ``path``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckpointError(
            f"{family} checkpoint directory {str(root)!r} does not exist. Put a Hugging Face {family} "
            "checkpoint there (config.json, model.safetensors, preprocessor_config.json); "
            "lightning-viper never downloads weights."
        )
    if not (root / "config.json").is_file():
        raise CheckpointError(f"{family} checkpoint directory {str(root)!r} has no config.json")
    return root


def read_preprocessor(root: Path) -> dict[str, Any]:
    """The checkpoint's preprocessor_config.json as a dict ({} when absent)."""
    file = root / PREPROCESSOR_FILE
    if not file.is_file():
        log.warning("%s has no %s: using the encoder family's default mean/std", root, PREPROCESSOR_FILE)
        return {}
    with open(file) as fh:
        config: dict[str, Any] = json.load(fh)
    return config


def processor_image_size(pre: dict[str, Any], default: int) -> int:
    """Square input size from a preprocessor config's ``size`` / ``crop_size`` entry."""
    for key in ("crop_size", "size"):
        size = pre.get(key)
        if isinstance(size, int):
            return size
        if isinstance(size, dict):
            if "height" in size:
                return int(size["height"])
            if "shortest_edge" in size:
                return int(size["shortest_edge"])
    return default


def square(value: Any) -> int:
    """A config's image/patch size (int or (h, w) pair) as one int; non-square raises."""
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"expected a square size (int or equal pair), got {value!r}")


class HFVisionTower(VisionEncoder):
    """A transformers vision tower -> (F, P, Dv) patch features, P = (image_size / patch_size)^2.

    Subclasses name their family with class attributes (``family``, ``model_cls``, ``config_cls``,
    default ``mean`` / ``std``, extra config keys) and inherit this constructor.

    Args:
        path: local checkpoint directory; when set, the shape arguments below are ignored and mean,
            std and input size come from its preprocessor_config.json.
        hidden_size, num_layers, num_heads, intermediate_size, patch_size, image_size: the shape
            of a randomly initialised tower (only without ``path``).
        feature_layer: which layer's output to return (-1 last, -2 second-to-last, ...).
        freeze: no gradients and eval mode for the tower (the paper freezes it in every stage).
        micro_batch: frames per encoder call (bounds activation memory on long videos).
        dtype: parameter dtype ("float32", "bfloat16", "float16").
        hidden_act: the MLP activation of a randomly initialised tower (only without ``path``; None:
            the family's default, SigLIP ``gelu_pytorch_tanh``). timm's so400m/14 SigLIP, which
            TimeViper uses, runs the exact ``gelu``.
        compile: ``torch.compile`` the encoder layer (one compiled graph shared by all layers:
            fuses the norms and residual adds around the matmuls). The first micro-batch of each
            new shape pays the compilation.
        fused: run the encoder layers through :mod:`~lightning_viper.encoders.vit_layer` (fused
            QKV, GEMM epilogues, no per-layer hidden-state list) on the tower's own weights;
            False runs transformers' forward (the reference the tests compare against).
    """

    family: ClassVar[str]
    model_cls: ClassVar[Any]  # e.g. transformers.SiglipVisionModel
    config_cls: ClassVar[Any]  # e.g. transformers.SiglipVisionConfig
    default_mean: ClassVar[list[float]]
    default_std: ClassVar[list[float]]
    config_extra: ClassVar[dict[str, Any]] = {}
    num_prefix_tokens: ClassVar[int] = 0  # tokens before the patches in the hidden states (CLIP: 1 CLS)

    model: nn.Module
    mean: Tensor  # (3,) buffer
    std: Tensor  # (3,) buffer

    def __init__(
        self,
        path: str | None = None,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 64,
        patch_size: int = 8,
        image_size: int = 32,
        feature_layer: int = -2,
        freeze: bool = True,
        micro_batch: int = 64,
        dtype: str = "float32",
        hidden_act: str | None = None,
        compile: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        family = self.family
        mean, std = self.default_mean, self.default_std
        config: Any
        if path is not None:
            root = vision_checkpoint_dir(path, family)
            self.model = self.model_cls.from_pretrained(str(root), local_files_only=True, dtype=torch_dtype(dtype))
            config = self.model.config
            pre = read_preprocessor(root)
            mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
            self.image_size = processor_image_size(pre, square(config.image_size))
            log.info("loaded %s tower from %s", family, root)
        else:
            config = self.config_cls(
                hidden_size=hidden_size,
                intermediate_size=intermediate_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                patch_size=patch_size,
                image_size=image_size,
                **self.config_extra,
                **({} if hidden_act is None else {"hidden_act": hidden_act}),
            )
            tower: nn.Module = self.model_cls(config)
            self.model = tower.to(torch_dtype(dtype))
            self.image_size = image_size
        if self.image_size != square(config.image_size):
            raise ValueError(
                f"{family}'s position embeddings are for {config.image_size} px but the preprocessor says "
                f"{self.image_size} px: fix preprocessor_config.json"
            )
        self.embed_dim = int(config.hidden_size)
        self.num_patches = (self.image_size // square(config.patch_size)) ** 2
        self._setup(mean, std, feature_layer, freeze, micro_batch, int(config.num_hidden_layers))
        self._fused = ViTLayers(str(config.hidden_act), compile=False) if fused else None
        if compile:
            self.compile_layers()

    def _setup(
        self, mean: list[float], std: list[float], feature_layer: int, freeze: bool, micro_batch: int, layers: int
    ) -> None:
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1 frame, got {micro_batch}")
        if not -layers <= feature_layer < layers:
            raise ValueError(f"feature_layer {feature_layer} is out of range for an encoder with {layers} layers")
        self.feature_layer = feature_layer
        self.freeze = freeze
        self.micro_batch = micro_batch
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.num_layers = layers
        self._drop_unused_layers(feature_layer % layers + 1)
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def layers(self) -> nn.ModuleList:
        """The tower's encoder layers (after the unused ones were dropped)."""
        tower = getattr(self.model, "vision_model", self.model)
        return cast(nn.ModuleList, cast(Any, tower).encoder.layers)

    def compile_layers(self) -> None:
        """``torch.compile`` the layers that run: the fused layer function (one graph for every
        layer), or transformers' layers in place when ``fused`` is off (parameter names unchanged)."""
        if self._fused is not None:
            self._fused = ViTLayers(self._fused.hidden_act, compile=True)
            return
        for layer in self.layers():
            layer.compile(dynamic=False)

    def _drop_unused_layers(self, keep: int) -> None:
        """Remove the layers after ``feature_layer`` and the final norm / pooling head: they
        would cost compute and leave parameters without gradients (which DDP rejects)."""
        tower = getattr(self.model, "vision_model", self.model)
        encoder = getattr(tower, "encoder", None)
        if encoder is None or not isinstance(getattr(encoder, "layers", None), nn.ModuleList):
            raise TypeError(f"{type(self.model).__name__} has no encoder.layers: not a supported vision tower")
        encoder.layers = encoder.layers[:keep]
        for name in ("post_layernorm", "head"):
            if isinstance(getattr(tower, name, None), nn.Module):
                setattr(tower, name, nn.Identity())
        self._hidden_index = keep  # hidden_states[0] is the embeddings, [i] the output of layer i - 1

    @contextmanager
    def transformers_forward(self) -> Iterator[None]:
        """Run transformers' own forward (not the fused layers) inside the block: the reference the
        fused path is checked against."""
        fused, self._fused = self._fused, None
        try:
            yield
        finally:
            self._fused = fused

    def train(self, mode: bool = True) -> HFVisionTower:
        """Frozen towers stay in eval mode (no dropout, fixed statistics) whatever the parent does."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def _features(self, pixels: Tensor) -> Tensor:
        """(f, 3, H, W) normalised pixels -> (f, P, Dv) features of ``feature_layer``."""
        if self._fused is not None:
            tower: Any = getattr(self.model, "vision_model", self.model)
            x = tower.embeddings(pixels)  # (f, prefix + P, Dv)
            pre_norm = getattr(tower, "pre_layrnorm", None)  # CLIP normalises the embeddings
            if pre_norm is not None:
                x = pre_norm(x)
            x, last_input = self._fused(x, self.layers(), keep_input_of_last=self._attention is not None)
            if self._attention is not None and last_input is not None:
                self._attention.append(self._attention_received(last_input))
            return x[:, self.num_prefix_tokens :]
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        layer_out: Tensor = out.hidden_states[self._hidden_index]  # (f, prefix + P, Dv)
        if self._attention is not None:  # opt-in (keep_attention); off by default
            self._attention.append(self._attention_received(out.hidden_states[self._hidden_index - 1]))
        return layer_out[:, self.num_prefix_tokens :]

    _attention: list[Tensor] | None = None

    def keep_attention(self) -> None:
        """Opt-in (VisionZip): each forward also records the attention every patch receives inside the
        ``feature_layer`` layer, averaged over heads and over the queries (the prefix (CLS) queries when
        the tower has them, else every token); :meth:`take_attention` returns it."""
        self._attention = []

    def take_attention(self) -> Tensor:
        """(F, P) attention received by each patch in the frames encoded since the last call."""
        if self._attention is None or not self._attention:
            raise RuntimeError(f"{self.family} tower: no attention recorded; call keep_attention() before forward")
        received, self._attention = torch.cat(self._attention), []
        return received

    def _attention_received(self, hidden: Tensor) -> Tensor:
        """(f, T, Dv) input of the feature layer -> (f, P) softmax(q k^T * scale) averaged as above."""
        layer: Any = self.layers()[-1]  # a transformers SigLIP/CLIP encoder layer
        attn = layer.self_attn
        f, t, _ = hidden.shape
        x = layer.layer_norm1(hidden)
        q = attn.q_proj(x).view(f, t, attn.num_heads, attn.head_dim).transpose(1, 2)  # (f, H, T, hd)
        k = attn.k_proj(x).view(f, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        weights = torch.softmax((q @ k.transpose(-1, -2)).float() * attn.scale, dim=-1)  # (f, H, T, T)
        queries = weights[:, :, : self.num_prefix_tokens] if self.num_prefix_tokens else weights
        return queries.mean(dim=(1, 2))[:, self.num_prefix_tokens :]  # (f, P)

    def forward(self, frames: Tensor) -> Tensor:
        """uint8 (F, 3, H, W) -> (F, P, Dv), in micro-batches of ``micro_batch`` frames."""
        dtype = next(self.model.parameters()).dtype
        if frames.shape[0] == 0:
            return frames.new_zeros((0, self.num_patches, self.embed_dim), dtype=dtype)

        def encode(chunk: Tensor) -> Tensor:
            return self._features(self.normalise(chunk, self.mean, self.std).to(dtype))  # (f, P, Dv)

        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return map_frames(encode, frames, self.micro_batch)  # (F, P, Dv)
