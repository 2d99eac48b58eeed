"""What ``VideoCLI`` checks and sets up before a run starts anything.

* ``--ckpt_path``: ``best`` is resolved to the file the ModelCheckpoint recorded, a file is read
  with ``weights_only=True`` (plain data only), its class must be the recipe's, and its stored
  hyperparameters are compared with the recipe's (the recipe and command line win). Lightning's
  own handling replaces the model config with the checkpoint's hyperparameters, which VideoLM's
  checkpoints cannot do: its parts (encoder, projector, backbone, compression) are modules, built
  from the recipe, not stored values.
* Config errors: the model, data and callbacks are built before the logger, so a bad schedule
  fails before any MLflow store or run is created; the error reaches the user as its message.
* Checkpoint writes go through :class:`~lightning_viper.checkpoint_io.AtomicCheckpointIO`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning import Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_viper.checkpoint_io import AtomicCheckpointIO, load_checkpoint

log = logging.getLogger("lightning_viper")

CONFIG_ERRORS = (ValueError, TypeError, OSError)  # what building parts from a recipe raises on bad input


class ConfigError(ValueError):
    """The recipe (or an override) cannot be built; the message says which part and why."""


def root_message(error: BaseException) -> str:
    """The innermost cause's message: jsonargparse wraps a constructor's error in its own."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)


# ---- --ckpt_path --------------------------------------------------------------------------------
def checkpoint_dirpath(config: Any) -> Path | None:
    """The first ModelCheckpoint's ``dirpath`` in a subcommand config, if set."""
    for cb in config.get("trainer", {}).get("callbacks") or []:
        if str(cb.get("class_path", "")).endswith("ModelCheckpoint"):
            dirpath = (cb.get("init_args") or {}).get("dirpath")
            if dirpath:
                return Path(dirpath)
    return None


def resolve_checkpoint(config: Any, ckpt_path: str) -> Path:
    """A checkpoint file, or ``last`` / ``best`` in the recipe's ModelCheckpoint dirpath, for the
    verbs that load a checkpoint without a trainer (``viper ask``, ``viper analyze``, lmms-eval)."""
    if ckpt_path == "best":
        return resolve_best(checkpoint_dirpath(config))
    if ckpt_path == "last":
        dirpath = checkpoint_dirpath(config)
        lasts = sorted(dirpath.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if dirpath else []
        if not lasts:
            raise ConfigError(
                f"--ckpt_path last: no last*.ckpt in {dirpath or 'the recipe (its ModelCheckpoint has no dirpath)'}; "
                "train first (lightning fit --config RECIPE) or pass a checkpoint file"
            )
        return lasts[-1]
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {ckpt_path!r} does not exist: pass a .ckpt file written by `lightning fit`, or 'last' / 'best'"
        )
    return path


def resolve_best(dirpath: Path | None) -> Path:
    """The best checkpoint recorded by the ModelCheckpoint state in ``dirpath``'s last checkpoint."""
    where = str(dirpath) if dirpath is not None else "the ModelCheckpoint dirpath (not set in the recipe)"
    lasts = sorted(dirpath.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if dirpath is not None else []
    if not lasts:
        raise ConfigError(
            f"--ckpt_path best: no last checkpoint in {where} to read the best one from; "
            "run `lightning fit` with this recipe first, or pass a checkpoint file"
        )
    states = load_checkpoint(lasts[-1]).get("callbacks", {})
    best = {
        str(s["best_model_path"])
        for key, s in states.items()
        if key.startswith("ModelCheckpoint") and isinstance(s, dict) and s.get("best_model_path")
    }
    if len(best) != 1:
        found = f"{len(best)} best checkpoints ({', '.join(sorted(best))})" if best else "no best checkpoint"
        raise ConfigError(
            f"--ckpt_path best: {lasts[-1]} records {found} (a ModelCheckpoint needs a monitor to keep a "
            "best one); pass a checkpoint file instead"
        )
    path = Path(best.pop())
    if not path.is_file() and dirpath is not None and (dirpath / path.name).is_file():
        path = dirpath / path.name  # the directory was moved since the fit
    if not path.is_file():
        raise ConfigError(f"--ckpt_path best: the best checkpoint {path} recorded in {lasts[-1]} is gone")
    return path


def check_ckpt_path(config: Any) -> None:
    """Resolve and check a subcommand config's ``ckpt_path`` in place (see the module docstring)."""
    if config.get("weights_only", False) is None:
        config["weights_only"] = True  # the trainer's own load: plain data only, whatever torch's default
    ckpt = config.get("ckpt_path")
    if ckpt == "best":
        path = resolve_best(checkpoint_dirpath(config))
        log.info("--ckpt_path best: %s", path)
        config["ckpt_path"] = ckpt = str(path)
    if not ckpt or ckpt in ("last", "hpc", "registry") or not Path(ckpt).is_file():
        return  # Lightning resolves these, and names a missing file itself
    if config.get("weights_only") is False:
        log.warning("--weights_only=false: %s is unpickled without checks; load only files you trust", ckpt)
        return
    try:
        hparams = dict(load_checkpoint(ckpt, "--ckpt_path checkpoint").get("hyper_parameters") or {})
    except ValueError as error:
        raise ConfigError(str(error)) from None
    model = config.get("model") or {}
    stored = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    wanted = model.get("class_path")
    if stored and wanted and stored != wanted:
        raise ConfigError(
            f"--ckpt_path {ckpt} holds a {stored} but the recipe builds a {wanted}: use the recipe the "
            "checkpoint was trained with"
        )
    init = model.get("init_args") or {}
    for key, value in hparams.items():
        if key in init and _plain(init[key]) != _plain(value):
            log.warning(
                "--ckpt_path %s was trained with model.init_args.%s=%r; this run uses %r from the recipe "
                "and command line",
                ckpt,
                key,
                value,
                _plain(init[key]),
            )


def _plain(value: Any) -> Any:
    """Namespaces as dicts and tuples as lists, so config values compare with stored ones."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ---- the logger, built after everything else ----------------------------------------------------
def take_logger(config: Any) -> Any:
    """Remove a class-configured ``trainer.logger`` from ``config`` (set it to False); return it.

    ``None`` when there is nothing to defer (no logger, or Lightning's default)."""
    trainer = config.get("trainer")
    logger = trainer.get("logger") if trainer is not None else None
    if not isinstance(logger, Namespace | list) or (isinstance(logger, list) and not logger):
        return None
    trainer["logger"] = False
    return logger


def build_loggers(logger_config: Any) -> list[Logger]:
    """Instantiate a ``trainer.logger`` config (one ``class_path`` block or a list of them)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--logger", type=Logger | list[Logger])
    value = [_plain(c) for c in logger_config] if isinstance(logger_config, list) else _plain(logger_config)
    built = parser.instantiate_classes(parser.parse_object({"logger": value})).logger
    return list(built) if isinstance(built, list) else [built]


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Swap Lightning's default checkpoint writer for one that never leaves a truncated file."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:  # a custom plugin from the recipe stays
        strategy.checkpoint_io = AtomicCheckpointIO()
