"""An evaluation-only comparison end to end: the demo recipe fitted once (2 steps), then five
training-free strategies, each a real `lightning test` subprocess with its own MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lightning_viper.compare import CompareStore, compare
from lightning_viper.compare import runner as runner_module

from .test_end_to_end import ROOT, TRIM

KEPT = ["base", "drop_uniform_50", "transv_a0_uniform_50", "visionzip_3_1", "temporal_merge_90"]


def predictions(run_dir: Path) -> list[tuple[str, str]]:
    lines = (run_dir / "predictions-test.jsonl").read_text().splitlines()
    return sorted((row["key"], row["prediction"]) for row in map(json.loads, lines))


@pytest.mark.slow
def test_training_free_comparison_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # data cache, runs and the MLflow store stay in tmp_path
    raw = yaml.safe_load((ROOT / "recipes/compare/demo_training_free.yaml").read_text())
    raw["base"] = str(ROOT / "recipes/demo.yaml")
    raw["strategies"] = [s for s in raw["strategies"] if s["name"] in KEPT]
    raw["tracking_uri"] = "sqlite:///mlflow.db"
    raw["overrides"] = []
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # absolute: mlflow caches one store per URI string, and
    # "sqlite:///mlflow.db" would reach the store of an earlier test that used it from another directory
    MlflowClient(uri).create_experiment(raw["experiment"], artifact_location=str(tmp_path / "art"))
    spec_path = tmp_path / "free.yaml"
    spec_path.write_text(yaml.safe_dump(raw))

    out = compare(str(spec_path), TRIM, output="report")
    store = CompareStore(f"sqlite:///{tmp_path / 'mlflow.db'}", raw["experiment"], raw["name"])
    records = {r.variant: r for r in store.records()}
    assert set(records) == set(KEPT)
    (fit,) = store.runs_with_role("checkpoint")  # the one fit; the report leaves it out
    assert fit.info.status == "FINISHED"
    run_ids = {r.run_id for r in records.values()}
    assert len(run_ids) == len(KEPT) and fit.info.run_id not in run_ids  # a run per strategy, none continues the fit
    for rec in records.values():
        assert "train/loss" not in store.client.get_run(rec.run_id).data.metrics  # nothing trained there
    m = {name: rec.metrics for name, rec in records.items()}

    # TransV with alpha = 0 (untrained) is plain dropping: same answers, same tokens
    runs = out / "runs"
    assert predictions(runs / "transv_a0_uniform_50-s0") == predictions(runs / "drop_uniform_50-s0")
    assert m["transv_a0_uniform_50"]["test/mcq/acc"] == m["drop_uniform_50"]["test/mcq/acc"]
    assert int(records["transv_a0_uniform_50"].params["model/params_compression"]) > 0  # its (unused) weights

    # budgets: 8 frames x ToMe's 4 tokens enter the LLM; dropping halves them from layer 1 on
    assert [m["base"][f"test/eff/vision_L{i}"] for i in range(6)] == [32] * 6
    assert [m["drop_uniform_50"][f"test/eff/vision_L{i}"] for i in range(6)] == [32] + [16] * 5
    assert m["drop_uniform_50"]["test/eff/gflops_llm"] < m["base"]["test/eff/gflops_llm"]
    assert m["visionzip_3_1"]["test/eff/vision_tokens"] == 32  # 3 dominant + 1 contextual per frame
    merged = m["temporal_merge_90"]["test/eff/stage0_L0_vision_after"]
    assert 4 <= merged <= 32 and m["temporal_merge_90"]["test/eff/vision_L0"] == merged

    md = (out / "report.md").read_text()
    assert "training-free" in md and "vision tokens by layer" in md and "32 → 16 @L1" in md
    assert (out / "score_vs_flops.png").is_file() and (out / "score_vs_layer_tokens.png").is_file()

    def must_not_run(*args: object) -> str:
        raise AssertionError(f"finished runs were launched again: {args[0]}")

    monkeypatch.setattr(runner_module, "_launch", must_not_run)
    compare(str(spec_path), TRIM, output="report")  # resumes: the fit and every test are done
