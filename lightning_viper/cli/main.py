"""The ``lightning`` console script: a LightningCLI over ``VideoLM`` and any LightningDataModule.

    lightning fit  --config recipes/demo.yaml
    lightning test --config recipes/demo.yaml --ckpt_path last
    lightning fit  --config recipes/demo.yaml --print_config
    lightning fit  --config recipes/demo.yaml --trainer.max_steps=50 --model.init_args.lr=3e-4

YAML picks every part by ``class_path``/``init_args``; omegaconf interpolation (``${...}``) works
in recipes. MLflow runs are named after the recipe and the compression strategy; a test or
resume from a checkpoint directory continues the fit's MLflow run. NanGuard and Preemption are in
every run: added when ``trainer.callbacks`` lacks them, unless ``--guards=false``
(``cli/guard_callbacks.py``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lightning_viper.callbacks.nan_guard import NonFiniteTrainingError
from lightning_viper.checkpoint_io import CheckpointWriteError
from lightning_viper.cli.guard_callbacks import GUARDS_HELP, add_missing_guards
from lightning_viper.cli.guards import (
    CONFIG_ERRORS,
    ConfigError,
    build_loggers,
    check_ckpt_path,
    checkpoint_dirpath,
    root_message,
    take_logger,
    use_atomic_checkpoints,
)
from lightning_viper.cli.list_merge import warn_positional_merges
from lightning_viper.module import VideoLM
from lightning_viper.tracking.flatten import flatten_config
from lightning_viper.tracking.mlflow import MLflowLogger, recall_run, remember_run
from lightning_viper.tracking.store import TrackingStoreError

log = logging.getLogger("lightning_viper")


class TrackedConfig(SaveConfigCallback):
    """Saves the resolved YAML next to the run and into MLflow, with flattened params and tags."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLflowLogger)]
        if not loggers:
            return
        config_text = self.parser.dump(self.config, skip_none=False)
        recipe = recipe_name(self.config)
        strategy = pl_module.strategy_name() if isinstance(pl_module, VideoLM) else "n/a"
        stage_name = str(getattr(stage, "value", stage))  # TrainerFn enum -> "fit" / "test" / ...
        for logger in loggers:
            tags = {"recipe": recipe, "strategy": strategy, "stage": stage_name}
            if not logger.explicit_run_name:
                tags["mlflow.runName"] = f"{recipe}-{strategy}"
            logger.set_tags(tags)
            if stage_name != "fit" and logger.continues_run:
                logger.keep_run_status()  # a test of the fit's checkpoint leaves the fit's status
            elif logger.continues_run:
                logger.claim_run()  # a resumed fit owns its run now (tracking/liveness.py)
            path = Path(trainer.default_root_dir) / f"config-{stage_name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(config_text)
            logger.log_file(path)
            if stage_name == "fit":
                params: dict[str, Any] = dict(flatten_config(self.config.as_dict()))
                if isinstance(pl_module, VideoLM):
                    params.update(pl_module.parameter_counts())
                logger.log_hyperparams(params)
            for cb in trainer.checkpoint_callbacks:
                if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                    remember_run(cb.dirpath, logger)


def recipe_name(config: Any) -> str:
    paths = config.get("config") or []
    if not paths:
        return "cli"
    first = paths[0]  # the recipe; later --config files are overlays
    path = Path(str(getattr(first, "absolute", first)))
    return path.stem if path.parent.name in ("recipes", "") else f"{path.parent.name}-{path.stem}"


class VideoCLI(LightningCLI):
    """LightningCLI for VideoLM recipes; see the module docstring."""

    def __init__(self, args: Any = None, run: bool = True, instantiate: bool = True) -> None:
        self._instantiate = instantiate
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            warn_positional_merges(argv)  # an overlay's callback inheriting the recipe's arguments by index
        super().__init__(
            model_class=VideoLM,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=TrackedConfig,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            parser_kwargs={"parser_mode": "omegaconf"},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def instantiate_classes(self) -> None:
        """Build model, data, callbacks and trainer, then the logger: a config error fails before
        any MLflow store or run exists, as a ``ConfigError`` holding the constructor's message."""
        if not self._instantiate:
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger_config = take_logger(config)
        try:
            super().instantiate_classes()
            loggers = build_loggers(logger_config) if logger_config is not None else None
        except (*CONFIG_ERRORS, TrackingStoreError) as error:
            log.debug("building from the config failed", exc_info=True)
            raise ConfigError(root_message(error)) from error
        finally:
            if logger_config is not None:
                config["trainer"]["logger"] = logger_config
        if loggers is not None:
            self.trainer.loggers = loggers

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)  # a failed save never leaves a truncated checkpoint
        return trainer

    def _parse_ckpt_path(self) -> None:
        """Replaces Lightning's: its checkpoint hyperparameters would replace the recipe's model
        config, and VideoLM stores only its plain arguments (see ``cli/guards.py``)."""
        if self.config.get("subcommand"):
            check_ckpt_path(self.config[self.config["subcommand"]])

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--guards", type=bool, default=True, help=GUARDS_HELP)

    def before_instantiate_classes(self) -> None:
        if not self._instantiate:
            return
        sub = self.subcommand
        config = self.config[sub] if sub else self.config
        add_missing_guards(config, enabled=bool(config.get("guards", True)))  # whatever the overlays did
        ckpt = config.get("ckpt_path") if sub else None
        if sub is None or ckpt is None:
            return
        ckpt_dir = self._checkpoint_dir(config, ckpt)
        if ckpt == "last" and (ckpt_dir is None or not any(ckpt_dir.glob("last*.ckpt"))):
            if sub != "fit":
                raise SystemExit(
                    f"--ckpt_path last: no last checkpoint in {ckpt_dir or 'the ModelCheckpoint dirpath'}; "
                    "run `lightning fit` with this recipe first, or pass a checkpoint file"
                )
            return
        run = recall_run(ckpt_dir) if ckpt_dir is not None else None
        logger_cfg = config.get("trainer", {}).get("logger")
        if run is None or logger_cfg is None or not str(logger_cfg.get("class_path", "")).endswith("MLflowLogger"):
            return
        init = logger_cfg.get("init_args")
        if init is not None and not init.get("run_id") and init.get("tracking_uri") == run.get("tracking_uri"):
            init["run_id"] = run["run_id"]
            log.info("continuing MLflow run %s recorded in %s", run["run_id"], ckpt_dir)

    @staticmethod
    def _checkpoint_dir(config: Any, ckpt: str) -> Path | None:
        if ckpt not in ("last", "best"):
            return Path(ckpt).parent
        return checkpoint_dirpath(config)


def parse_recipe(path: str | Path, *overrides: str) -> Any:
    """Parse and type-check a recipe without building anything (used by tests and tools)."""
    cli = VideoCLI(args=["--config", str(path), *overrides], run=False, instantiate=False)
    return cli.config


def main(args: Any = None) -> None:
    logging.basicConfig(level=os.environ.get("VIPER_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    try:
        VideoCLI(args=args)
    except NonFiniteTrainingError as error:  # the message names the steps and what to do; no traceback
        log.error("%s", error)
        raise SystemExit(1) from None
    except ConfigError as error:  # nothing was created; VIPER_LOG_LEVEL=DEBUG shows the traceback
        log.error("%s", error)
        raise SystemExit(2) from None
    except (TrackingStoreError, CheckpointWriteError) as error:  # says what failed and how to resume
        log.error("%s", error)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
