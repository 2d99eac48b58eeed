"""`compare` on the demo comparison, trimmed to two strategies, one seed and a few steps: real fit/test
subprocesses. (Several seeds and frame counts, resume and aggregation: test_store.py, on a stand-in launcher.)"""

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lightning_viper.compare import CompareStore, compare
from lightning_viper.compare import runner as runner_module

ROOT = Path(__file__).resolve().parents[2]
TRIM = [
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",  # the one validation at step 2 runs the val loop (and its generation)
    "--trainer.limit_test_batches=2",
    "--data.init_args.num_train=16",
    "--data.init_args.num_val=4",
    "--data.init_args.num_test=8",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
]


@pytest.mark.slow
def test_demo_comparison_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # data cache, checkpoints and the MLflow store stay in tmp_path
    raw = yaml.safe_load((ROOT / "recipes/compare/demo.yaml").read_text())
    raw["base"] = str(ROOT / "recipes/demo.yaml")
    raw["seeds"] = [0]  # the recipe's three seeds would triple the subprocesses (12 instead of 4)
    raw["frames"]["values"] = [4]
    raw["strategies"] = [s for s in raw["strategies"] if s["name"] in ("none", "transv_two_stage")]
    raw["tracking_uri"] = "sqlite:///mlflow.db"
    raw["overrides"] = [*raw.get("overrides", []), "--data.init_args.tasks=[mcq, grounding]"]  # both score columns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # absolute: mlflow caches one store per URI string, and
    # "sqlite:///mlflow.db" would reach the store of an earlier test that used it from another directory
    MlflowClient(uri).create_experiment(raw["experiment"], artifact_location=str(tmp_path / "art"))
    spec_path = tmp_path / "demo.yaml"
    spec_path.write_text(yaml.safe_dump(raw))

    out = compare(str(spec_path), TRIM, output="report")
    assert out == tmp_path / "report"
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| strategy"))
    assert "MCQ acc" in header and "grounding mIoU" in header and "kept (fraction)" in header
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"strategy", "none", "transv_two_stage"}
    assert (out / "score_vs_tokens.png").is_file()

    store = CompareStore(f"sqlite:///{tmp_path / 'mlflow.db'}", raw["experiment"], "demo")
    records = {r.variant: r for r in store.records()}
    assert set(records) == {"none", "transv_two_stage"}
    none, two = records["none"], records["transv_two_stage"]
    # none: 4 frames x 8x8 patches enter the LLM and all reach the last layer; the schedule keeps 10% of ToMe's 16
    assert none.metrics["test/eff/vision_tokens"] == 256 and none.metrics["test/eff/vision_tokens_final"] == 256
    assert two.metrics["test/eff/vision_tokens"] == 16
    assert two.metrics["test/eff/vision_tokens_final"] == pytest.approx(2)
    assert int(two.params["model/params_compression"]) > 0 and int(none.params["model/params_compression"]) == 0
    run = store.client.get_run(two.run_id)
    assert run.data.tags["seed"] == "0" and run.data.tags["frames"] == "4"
    assert run.data.tags["mlflow.parentRunId"] == store.summary_run()

    def must_not_run(*args: object) -> str:
        raise AssertionError(f"finished runs were launched again: {args[0]}")

    monkeypatch.setattr(runner_module, "_launch", must_not_run)
    compare(str(spec_path), TRIM, output="report")  # resumes: everything is done
