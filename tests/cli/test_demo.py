"""The demo recipe end to end: fit, test from the last checkpoint, resume, MLflow read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lightning_viper.cli.main import VideoCLI


def test_demo_fast_dev_run(demo_cli: Callable[..., VideoCLI]) -> None:
    cli = demo_cli("fit", "--trainer.fast_dev_run=true")
    assert cli.trainer.global_step == 1
    assert cli.trainer.callback_metrics["train/loss"].isfinite()


@pytest.mark.slow
def test_demo_fit_test_resume_logged_in_mlflow(demo_cli: Callable[..., VideoCLI]) -> None:
    tmp: Path = demo_cli.tmp_path  # type: ignore[attr-defined]
    fit = demo_cli("fit", "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1")
    assert fit.trainer.global_step == 4
    assert (tmp / "ckpt" / "last.ckpt").is_file()

    test = demo_cli("test", "--ckpt_path=last")
    assert "test/mcq/acc" in test.trainer.callback_metrics
    lines = (Path(test.trainer.default_root_dir) / "predictions-test.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows and all(set(r) >= {"key", "prediction", "answer", "score"} for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)  # one line per test sample, no padding repeats

    resumed = demo_cli("fit", "--trainer.max_steps=6", "--ckpt_path=last", "--trainer.limit_val_batches=1")
    assert resumed.trainer.global_step == 6  # continued from step 4, not from scratch

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "test and resume continue the fit's MLflow run"
    run = runs[0]
    assert run.info.run_name == "demo-ToMe(tokens_per_frame=4)"
    assert run.data.tags["strategy"] == "ToMe(tokens_per_frame=4)"  # the demo merges with ToMe, no stages
    assert run.data.tags["recipe"] == "demo"
    assert float(run.data.params["model.init_args.lr"]) == pytest.approx(2e-3)
    assert int(run.data.params["model/params_backbone"]) > 0
    for key in ("train/loss", "val/loss", "test/loss", "test/mcq/acc", "test/eff/prefill_ms", "test/eff/frames"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test/eff/frames"] == 8.0
    assert 0.0 <= run.data.metrics["test/mcq/acc"] <= 1.0
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert max(steps) > 3  # the resumed fit kept logging into the same run past the first fit's last step
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config-fit.yaml", "config-test.yaml", "predictions-test.jsonl"} <= artifacts
    config_text = Path(client.download_artifacts(run.info.run_id, "config-fit.yaml", str(tmp))).read_text()
    assert "lightning_viper.backbones.NemotronHBackbone" in config_text


def test_test_without_checkpoint_fails_clearly(demo_cli: Callable[..., VideoCLI]) -> None:
    with pytest.raises(SystemExit, match="no last checkpoint"):
        demo_cli("test", "--ckpt_path=last")
