"""``viper export CKPT DST RECIPE``: a trained Lightning checkpoint -> an exported directory.

The recipe (the one the checkpoint was trained with, same overrides) says how the model is built;
its parts that read local checkpoints (a vision tower ``path``, ``load_nemotron_h(path)``) are
rewritten as path-free specs of the same shape, so the directory stands alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lightning_viper.backbones.loading import CheckpointError, load_strict, read_config
from lightning_viper.backbones.nemotron_h_loading import config_to_kwargs
from lightning_viper.checkpoint_io import load_checkpoint
from lightning_viper.encoders.hf_tower import HFVisionTower, square
from lightning_viper.export.directory import build, exported_dir, read_spec, save
from lightning_viper.module import VideoLM
from lightning_viper.text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

NEMOTRON_CLASS = "lightning_viper.backbones.nemotron_h.NemotronHBackbone"
BACKBONE_RUNTIME = ("gradient_checkpointing", "prefill_chunk", "kernels")
TOWER_OPTIONS = ("feature_layer", "freeze", "micro_batch", "dtype")
DROPPED_ARGS = ("init_from", "init_parts", "tokenizer")  # the weights are in the directory
PROCESSOR_KEYS = ("image_size", "fps", "max_frames", "num_frames")
TOWER_CONFIG_CHECKED = ("hidden_act", "layer_norm_eps", "num_channels", "attention_dropout")


def class_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def tower_spec(tower: HFVisionTower, args: dict[str, Any]) -> dict[str, Any]:
    """A path-free spec of a vision tower loaded from a checkpoint (its config gives the shape)."""
    config: Any = tower.model.config
    init = {
        "hidden_size": int(config.hidden_size),
        "num_layers": int(config.num_hidden_layers),
        "num_heads": int(config.num_attention_heads),
        "intermediate_size": int(config.intermediate_size),
        "patch_size": square(config.patch_size),
        "image_size": tower.image_size,
        "hidden_act": str(config.hidden_act),
    }
    init.update({k: args[k] for k in TOWER_OPTIONS if k in args})
    family = type(tower)
    shape = {k: init[k] for k in ("hidden_size", "intermediate_size", "patch_size", "image_size")}
    fresh = family.config_cls(num_hidden_layers=init["num_layers"], num_attention_heads=init["num_heads"],
                              hidden_act=init["hidden_act"], **shape, **family.config_extra)  # fmt: skip
    for key in TOWER_CONFIG_CHECKED:
        if getattr(fresh, key, None) != getattr(config, key, None):
            raise CheckpointError(
                f"the {family.family} checkpoint sets {key}={getattr(config, key, None)!r}, which a path-free "
                f"{family.__name__} cannot express (it would build {getattr(fresh, key, None)!r})"
            )
    defaults = torch.tensor([family.default_mean, family.default_std])
    if not torch.equal(torch.stack([tower.mean, tower.std]).cpu(), defaults):
        raise CheckpointError(
            f"the {family.family} checkpoint's preprocessor normalises with mean {tower.mean.tolist()} / std "
            f"{tower.std.tolist()}, not the family's defaults: a path-free export cannot carry them yet"
        )
    return {"class_path": class_name(tower), "init_args": init}


def nemotron_spec(args: dict[str, Any]) -> dict[str, Any]:
    """``load_nemotron_h(path, ...)`` -> the NemotronHBackbone spec of that checkpoint's config."""
    kwargs = config_to_kwargs(read_config(args["path"]))
    kwargs.update({k: args[k] for k in BACKBONE_RUNTIME if k in args})
    return {"class_path": NEMOTRON_CLASS, "init_args": kwargs}


def portable_spec(model_cfg: dict[str, Any], model: VideoLM) -> dict[str, Any]:
    """The recipe's model spec with every checkpoint-reading part made path-free."""
    cls = str(model_cfg.get("class_path", ""))
    args = dict(model_cfg.get("init_args") or {})
    if cls.endswith("PretrainedVideoLM"):  # already from a directory: its spec, the recipe's options
        base = read_spec(exported_dir(args.pop("path")))
        base_args = dict(base.get("init_args") or {})
        base_args.update(args)
        return {"class_path": base["class_path"], "init_args": base_args}
    for name in DROPPED_ARGS:
        args.pop(name, None)
    encoder = dict(args["encoder"])
    if (encoder.get("init_args") or {}).get("path") is not None:
        if not isinstance(model.encoder, HFVisionTower):
            raise CheckpointError(f"export cannot make the encoder {encoder['class_path']} path-free")
        args["encoder"] = tower_spec(model.encoder, encoder["init_args"])
    backbone = dict(args["backbone"])
    backbone_args = backbone.get("init_args") or {}
    if backbone_args.get("path") is not None:
        if not str(backbone["class_path"]).endswith("load_nemotron_h"):
            raise CheckpointError(
                f"export makes load_nemotron_h path-free; {backbone['class_path']} is not supported yet"
            )
        args["backbone"] = nemotron_spec(backbone_args)
    return {"class_path": cls, "init_args": args}


def export(ckpt: str, dst: str, recipe: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Write the model of Lightning checkpoint ``ckpt`` (trained with ``recipe``) to ``dst``.

    Args:
        ckpt: a checkpoint written by ``lightning fit`` (read with ``weights_only=True``).
        dst: the directory to write (see :mod:`lightning_viper.export.directory`).
        recipe: the recipe of the run; ``overrides`` the dotted overrides it ran with.
    """
    from lightning_viper.cli.main import parse_recipe

    config = parse_recipe(recipe, *(overrides or []))
    model_cfg = config["model"].as_dict()
    model = build(model_cfg)
    state = load_checkpoint(ckpt, "checkpoint to export").get("state_dict")
    if state is None:
        raise CheckpointError(f"{ckpt!r} has no 'state_dict': not a Lightning checkpoint")
    load_strict(model, state, source=f"checkpoint {ckpt!r}")
    model.load_state_dict(state, strict=True, assign=True)
    data_args = dict((config.get("data") or {}).get("init_args") or {})
    tokenizer = load_tokenizer(data_args["tokenizer"]) if data_args.get("tokenizer") else None
    processor = {k: data_args[k] for k in PROCESSOR_KEYS if k in data_args}
    spec = portable_spec(model_cfg, model)
    root = save(model, dst, spec, tokenizer, processor)
    return {"exported": str(Path(root).resolve()), "strategy": model.strategy_name(), "processor": processor}
