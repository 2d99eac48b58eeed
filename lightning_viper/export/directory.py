"""The exported VideoLM directory: writing it (:func:`save`) and reading it back (:func:`load`).

Layout::

    model.yaml          the VideoLM spec: {class_path, init_args}; every part is path-free
                        (shapes and options only), so the directory needs nothing else
    model.safetensors   every tensor of ``VideoLM.state_dict()`` in its own dtype; tensors shared
                        by two keys (a tied LM head) are stored once and named in the metadata
    processor.json      what the data side must match: image_size, fps, max_frames, num_frames
    tokenizer/          the tokenizer's ``save_pretrained`` files, when there is one

:func:`load` builds the parts from ``model.yaml`` and assigns the stored tensors strictly (every
key present, no extra key, equal shapes), so the model comes back bit for bit.
:class:`PretrainedVideoLM` does the same inside a recipe (``model.class_path``), with the training
options (trainable parts, learning rates, generation) set by the recipe.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lightning_viper.backbones.loading import CheckpointError, load_strict
from lightning_viper.module import ModuleName, Split, VideoLM
from lightning_viper.text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

SPEC_FILE = "model.yaml"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_FILE = "processor.json"
TOKENIZER_DIR = "tokenizer"
TIED_KEY = "tied"  # safetensors metadata: JSON {dropped key: key holding the same tensor}


def build(spec: dict[str, Any]) -> VideoLM:
    """A VideoLM from a ``{class_path, init_args}`` spec (type-checked by jsonargparse)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(VideoLM, "model", required=True)
    try:
        config = parser.parse_object({"model": spec})
    except Exception as error:  # jsonargparse's message names the bad key
        raise CheckpointError(f"the model spec does not describe a VideoLM: {error}") from error
    model: VideoLM = parser.instantiate(config).model
    return model


def state_for_saving(model: VideoLM) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors to write, {dropped key: kept key}) with every shared tensor written once."""
    tensors: dict[str, Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    for key, value in model.state_dict().items():
        ident = (value.data_ptr(), tuple(value.shape))
        if value.numel() and ident in seen:
            tied[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = value.detach().contiguous()
    return tensors, tied


def save(
    model: VideoLM,
    dst: str | Path,
    spec: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase | None = None,
    processor: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (built from ``spec``) as an exported directory (module docstring)."""
    root = Path(dst).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    tensors, tied = state_for_saving(model)
    save_file(tensors, str(root / WEIGHTS_FILE), metadata={TIED_KEY: json.dumps(tied)})
    (root / PROCESSOR_FILE).write_text(json.dumps(processor or {}, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(root / TOKENIZER_DIR))
    log.info("wrote %d tensors (%d tied) and %s to %s", len(tensors), len(tied), SPEC_FILE, root)
    return root


def exported_dir(path: str | Path) -> Path:
    """An exported directory, or :class:`CheckpointError` saying what is missing."""
    root = Path(path).expanduser()
    for name in (SPEC_FILE, WEIGHTS_FILE):
        if not (root / name).is_file():
            raise CheckpointError(
                f"{str(root)!r} has no {name}: not a directory written by `viper export` or `viper convert`"
            )
    return root


def read_spec(root: Path) -> dict[str, Any]:
    spec = yaml.safe_load((root / SPEC_FILE).read_text())
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise CheckpointError(f"{str(root / SPEC_FILE)!r} is not a {{class_path, init_args}} model spec")
    return spec


def read_weights(root: Path) -> dict[str, Tensor]:
    """The stored tensors, shared ones restored under every key that held them."""
    with safe_open(str(root / WEIGHTS_FILE), framework="pt") as fh:
        state: dict[str, Tensor] = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        tied = json.loads((fh.metadata() or {}).get(TIED_KEY, "{}"))
    for key, source in tied.items():
        state[key] = state[source]
    return state


def assign_weights(model: VideoLM, root: Path) -> None:
    """Strictly assign the directory's tensors to ``model`` (their dtypes included)."""
    state = read_weights(root)
    load_strict(model, state, source=f"exported model {str(root)!r}")  # names the offending keys
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # assignment gives every key its own tensor: share tied ones again
        tie = getattr(module, "tie_weights", None)
        if module is not model and callable(tie):
            tie()


def read_processor(root: Path) -> dict[str, Any]:
    file = root / PROCESSOR_FILE
    processor: dict[str, Any] = json.loads(file.read_text()) if file.is_file() else {}
    return processor


def read_tokenizer(root: Path) -> PreTrainedTokenizerBase | None:
    return load_tokenizer(root / TOKENIZER_DIR) if (root / TOKENIZER_DIR).is_dir() else None


def load(path: str | Path) -> VideoLM:
    """The VideoLM of an exported directory, in eval mode, with its tokenizer when it has one."""
    root = exported_dir(path)
    model = build(read_spec(root))
    assign_weights(model, root)
    model.tokenizer = read_tokenizer(root)
    log.info("loaded %s from %s", model.strategy_name(), root)
    return model.eval()


class PretrainedVideoLM(VideoLM):
    """A VideoLM read from an exported directory, for recipes (``model.class_path``).

    Args:
        path: the directory (``viper export`` / ``viper convert`` output).
        The others are :class:`~lightning_viper.module.VideoLM`'s training and generation options.
    """

    def __init__(
        self,
        path: str,
        trainable: list[ModuleName] | None = None,
        lr: float = 1e-5,
        module_lr: dict[str, float] | None = None,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_ratio: float = 0.03,
        max_new_tokens: int = 16,
        generate_in: list[Split] | None = None,
        pack_sequences: bool = False,
    ) -> None:
        root = exported_dir(path)
        parts = build(read_spec(root))
        super().__init__(
            encoder=parts.encoder,
            projector=parts.projector,
            backbone=parts.backbone,
            compression=parts.stages(),
            trainable=trainable,
            lr=lr,
            module_lr=module_lr,
            weight_decay=weight_decay,
            betas=betas,
            warmup_ratio=warmup_ratio,
            max_new_tokens=max_new_tokens,
            generate_in=generate_in,
            tokenizer=read_tokenizer(root),
            pack_sequences=pack_sequences,
        )
        assign_weights(self, root)
        for name, part in self.parts().items():  # assigned tensors: set what trains again
            part.requires_grad_(name in self.trainable)
