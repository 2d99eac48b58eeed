"""``--ckpt_path``: every checkpoint file of a recipe loads in fit and test, ``best`` included, and
only plain data is ever unpickled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from lightning_viper.cli.guards import ConfigError
from lightning_viper.cli.main import VideoCLI


def _checkpoints_overlay(tmp: Path) -> str:
    """A ModelCheckpoint keeping the 2 best steps by val/loss plus last.ckpt, in tmp/ckpt."""
    path = tmp / "checkpoints.yaml"
    path.write_text(
        f"""
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp / "ckpt"}, monitor: val/loss, save_top_k: 2, save_last: true}}
"""
    )
    return str(path)


@pytest.mark.slow
def test_fit_and_test_load_any_checkpoint_file_and_best(demo_cli: Callable[..., VideoCLI]) -> None:
    tmp: Path = demo_cli.tmp_path  # type: ignore[attr-defined]
    ckpts = ["--config", _checkpoints_overlay(tmp), "--trainer.limit_val_batches=1"]
    demo_cli("fit", *ckpts, "--trainer.max_steps=4", "--trainer.val_check_interval=2")
    files = sorted((tmp / "ckpt").glob("*.ckpt"))
    assert {f.name for f in files} == {"epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"}
    for f in files:  # what the project writes is plain data: loadable without unpickling code
        assert "state_dict" in torch.load(f, map_location="cpu", weights_only=True)

    early = tmp / "ckpt" / "epoch=0-step=2.ckpt"
    test = demo_cli("test", *ckpts, f"--ckpt_path={early}", "--model.init_args.max_new_tokens=3")
    assert "test/mcq/acc" in test.trainer.callback_metrics
    assert test.model.hparams["max_new_tokens"] == 3  # the command line wins over the stored value
    assert test.config["test"]["weights_only"] is True  # the trainer's own load unpickles plain data only

    best = demo_cli("test", *ckpts, "--ckpt_path=best")
    recorded = torch.load(tmp / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    best_path = next(s["best_model_path"] for k, s in recorded.items() if k.startswith("ModelCheckpoint"))
    assert best.config["test"]["ckpt_path"] == best_path
    assert "test/mcq/acc" in best.trainer.callback_metrics

    resumed = demo_cli("fit", *ckpts, f"--ckpt_path={early}", "--trainer.max_steps=6")
    assert resumed.trainer.global_step == 6  # restored at step 2, trained to 6
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo-test")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 1, "all continue the fit's run"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_a_checkpoint_that_would_run_code_or_of_another_class_is_refused(
    demo_cli: Callable[..., VideoCLI], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": _Payload(marker)}}, crafted)
    with pytest.raises(ConfigError, match="refusing to load it"):
        demo_cli("test", f"--ckpt_path={crafted}")
    assert not marker.exists()

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "some.OtherModel", "lr": 1.0}}, other)
    with pytest.raises(ConfigError, match=r"holds a some\.OtherModel but the recipe builds a lightning_viper"):
        demo_cli("test", f"--ckpt_path={other}")
    assert not (tmp_path / "mlflow.db").exists()
