"""Reading Hugging Face checkpoint directories (config.json + safetensors, sharded or not)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, or does not match the model."""


def checkpoint_dir(path: str | Path, what: str = "checkpoint") -> Path:
    """Resolve a local checkpoint directory or raise saying what belongs there."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(
            f"{what} directory {str(p)!r} does not exist. Put a Hugging Face checkpoint there "
            "(config.json plus model.safetensors or model-*.safetensors with "
            f"{INDEX_FILE}); lightning-viper never downloads weights."
        )
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{what} directory {str(p)!r} has no config.json: it is not a Hugging Face checkpoint")
    return p


def float_dtype(name: str, what: str) -> torch.dtype:
    """The torch floating-point dtype called ``name`` ("float32", "bfloat16", "float16") or a ValueError."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{what}: dtype must be 'float32', 'bfloat16' or 'float16', got {name!r}")
    return dtype


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict."""
    with open(checkpoint_dir(path) / "config.json") as fh:
        config: dict[str, Any] = json.load(fh)
    return config


def read_state_dict(path: str | Path, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """All tensors of a checkpoint directory (single file or sharded with an index)."""
    root = checkpoint_dir(path)
    if (root / INDEX_FILE).is_file():
        with open(root / INDEX_FILE) as fh:
            weight_map: dict[str, str] = json.load(fh)["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (root / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise CheckpointError(f"{str(root)!r} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    state: dict[str, Tensor] = {}
    for name in files:
        if not (root / name).is_file():
            raise CheckpointError(f"shard {name!r} listed in {INDEX_FILE} is missing from {str(root)!r}")
        for key, value in load_file(str(root / name)).items():
            state[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    log.info("read %d tensors from %d file(s) in %s", len(state), len(files), root)
    return state


def rename_keys(state: Mapping[str, Tensor], prefixes: Mapping[str, str]) -> dict[str, Tensor]:
    """Replace leading prefixes of keys, e.g. {"model.": "", "backbone.": ""}; first match wins."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def load_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    expected_missing: Iterable[str] = (),
    expected_unexpected: Iterable[str] = (),
    source: str = "checkpoint",
) -> None:
    """Load ``state`` into ``module``; every key must be accounted for.

    Keys in ``expected_missing`` (absent from the checkpoint, e.g. a tied lm_head) and
    ``expected_unexpected`` (present but unused, e.g. rotary caches) are allowed; anything else
    raises :class:`CheckpointError` listing the offending keys. Shapes must match exactly.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state) - set(expected_missing))
    unexpected = sorted(set(state) - set(own) - set(expected_unexpected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match {type(module).__name__}: "
            f"missing {len(missing)} key(s) {missing[:8]}, unexpected {len(unexpected)} key(s) {unexpected[:8]}"
        )
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch (key, checkpoint, model): {wrong[:8]}")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
