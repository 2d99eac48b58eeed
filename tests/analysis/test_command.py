"""`viper analyze knockout|attention` on the session's tiny trained checkpoint: JSON, PNGs and an MLflow run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest

from lightning_viper.analysis.knockout import measure, mixer_layers
from lightning_viper.analysis.load import eval_batches, load
from lightning_viper.analysis.mixers import Knockout
from lightning_viper.cli.viper import main
from tests.fixtures_demo import DEMO, Tiny

pytestmark = pytest.mark.slow  # the session's tiny checkpoint is trained on first use (seconds on CPU)


def _run(verb: str, tiny: Tiny, out: Path, *extra: str) -> Path:
    main(["analyze", verb, "--config", str(DEMO), "--ckpt_path", str(tiny.checkpoint), "--out", str(out),
          "--override", f"config={tiny.overlay}", "--max_samples=4", *extra])  # fmt: skip
    return out


def _run_files(tiny: Tiny, name: str) -> tuple[dict[str, float], list[str]]:
    mlflow.set_tracking_uri(tiny.tracking_uri)
    (run,) = mlflow.search_runs(experiment_names=["demo-test"], filter_string=f"tags.mlflow.runName = '{name}'",
                                output_format="list")  # fmt: skip
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "analysis")]
    return run.data.metrics, files


def test_knockout_writes_json_plot_and_an_mlflow_run(tiny: Tiny, tmp_path: Path) -> None:
    out = _run("knockout", tiny, tmp_path / "knockout", "--layers=[0, 2]")
    data = json.loads((out / "knockout.json").read_text())
    assert data["baseline"]["samples"] == 4
    assert [(p["layer"], p["kind"], p["flow"]) for p in data["points"]] == [
        (0, "mamba", "V2I"), (0, "mamba", "V2R"), (2, "attention", "V2I"), (2, "attention", "V2R")
    ]  # fmt: skip
    assert all(0.0 <= p["score"] <= 1.0 and p["loss"] > 0 for p in data["points"])
    assert (out / "knockout.png").stat().st_size > 1000
    metrics, files = _run_files(tiny, "demo-analyze-knockout")
    assert "knockout/V2I/score" in metrics and "knockout/baseline/loss" in metrics
    assert sorted(files) == ["analysis/knockout.json", "analysis/knockout.png"]


def test_attention_writes_maps_shares_and_classes(tiny: Tiny, tmp_path: Path) -> None:
    out = _run("attention", tiny, tmp_path / "attention")
    data = json.loads((out / "attention.json").read_text())
    assert [lay["kind"] for lay in data["layers"]] == ["mamba", "attention", "mamba", "attention"]  # M-*M-*
    assert sum(data["classes"].values()) == 8 + 4 + 8 + 4  # every head classified
    for name in ("shares.png", "heads.png"):
        assert (out / name).stat().st_size > 1000
    _, files = _run_files(tiny, "demo-analyze-attention")
    assert "analysis/attention.json" in files


def test_blocking_every_vision_edge_everywhere_makes_the_answers_independent_of_the_video(tiny: Tiny) -> None:
    loaded = load(str(DEMO), str(tiny.checkpoint), ["--config", str(tiny.overlay)], device="cpu")
    batches = eval_batches(loaded.datamodule, "test", 4)
    other = [replace(b, frames=b.frames.flip(0)) for b in batches]  # other frames, same text
    everywhere = {i: Knockout("V2T") for i in mixer_layers(loaded.model)}
    free = measure(loaded.model, batches, None), measure(loaded.model, other, None)
    cut = measure(loaded.model, batches, everywhere), measure(loaded.model, other, everywhere)
    assert abs(free[0].loss - free[1].loss) > 1e-4  # the video matters to the trained model
    assert abs(cut[0].loss - cut[1].loss) < 1e-5
    assert cut[0].score == cut[1].score


def test_a_missing_checkpoint_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "knockout", "--config", str(DEMO), "--ckpt_path", str(tmp_path / "nope.ckpt"),
              "--out", str(tmp_path)])  # fmt: skip
    assert exit_info.value.code == 2
    assert "nope.ckpt' does not exist" in caplog.text
