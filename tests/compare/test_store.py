"""MLflow queries and the resume rules, against a real sqlite store (runs made with the mlflow client)."""

import os
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lightning_viper.compare import CompareError, CompareStore, compare, load_spec
from lightning_viper.compare import runner as runner_module
from lightning_viper.compare.commands import run_tags
from lightning_viper.compare.spec import CompareSpec, Variant
from lightning_viper.tracking.liveness import TAG_HOST, TAG_PID


def _make_run(client: MlflowClient, exp_id: str, tags: dict[str, str], status: str, test_metric: bool) -> str:
    run = client.create_run(exp_id, tags=tags)
    client.log_param(run.info.run_id, "model/params_compression", "77")
    client.log_metric(run.info.run_id, "val/loss", 1.0)
    if test_metric:
        client.log_metric(run.info.run_id, "test/mcq/acc", 0.75)
        client.log_metric(run.info.run_id, "test/eff/vision_tokens", 64.0)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _tags(name: str, variant: str, seed: int, frames: str) -> dict[str, str]:
    return {"compare": name, "variant": variant, "seed": str(seed), "frames": frames}


def test_complete_runs_and_records(tracking_uri: str) -> None:
    store = CompareStore(tracking_uri, "compare-tiny", "tiny")
    client, exp = store.client, store.experiment_id
    done = _make_run(client, exp, _tags("tiny", "none", 0, "4"), "FINISHED", test_metric=True)
    _make_run(client, exp, _tags("tiny", "none", 1, "4"), "FINISHED", test_metric=False)  # fit only
    _make_run(client, exp, _tags("tiny", "none", 0, "8"), "FAILED", test_metric=True)
    _make_run(client, exp, _tags("other", "none", 0, "4"), "FINISHED", test_metric=True)  # other comparison
    assert store.complete_run("none", 0, "4").info.run_id == done
    assert store.complete_run("none", 1, "4") is None
    assert store.complete_run("none", 0, "8") is None
    (record,) = store.records()
    assert (record.variant, record.seed, record.frames, record.run_id) == ("none", 0, "4", done)
    assert record.metrics["test/mcq/acc"] == 0.75 and record.params["model/params_compression"] == "77"
    store.mark_stale(client.get_run(done))
    assert store.complete_run("none", 0, "4") is None and store.records() == []


def test_summary_run_is_created_once(tracking_uri: str) -> None:
    store = CompareStore(tracking_uri, "compare-tiny", "tiny")
    first = store.summary_run()
    assert store.summary_run() == first
    assert store.runs_of("none", 0, "4") == []  # the summary run is not a variant run
    tags = store.client.get_run(first).data.tags  # owned: a kill -9 of viper compare is found later
    assert tags[TAG_HOST] == socket.gethostname() and tags[TAG_PID] == str(os.getpid())


class FakeLightning:
    """Stands in for the `lightning` subprocess: records calls and writes what fit/test would write."""

    def __init__(self, store: CompareStore, fail: set[str] | None = None) -> None:
        self.store, self.calls, self.fail = store, [], fail or set()

    def __call__(self, stage: str, spec: CompareSpec, patch: Path, extra: list[str], run_dir: Path) -> str | None:
        variant = next(v for v in spec.variants() if v.key == run_dir.name)
        self.calls.append((stage, variant.key))
        if f"{stage}:{variant.key}" in self.fail:
            return "exited with 1"
        client = self.store.client
        if stage == "fit":
            run = client.create_run(self.store.experiment_id, tags=run_tags(spec, variant))
            client.set_terminated(run.info.run_id, "FINISHED")
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "checkpoints" / "last.ckpt").write_text("weights")
        else:
            run = self.store.runs_of(variant.strategy.name, variant.seed, variant.frames_tag)[0]
            client.log_metric(run.info.run_id, "test/mcq/acc", 0.5 + 0.1 * variant.seed)
            client.log_metric(run.info.run_id, "test/eff/vision_tokens", 64.0)
            client.log_metric(run.info.run_id, "test/eff/vision_tokens_final", 32.0)
        return None


def test_compare_resumes_from_mlflow(spec_file: Path, tracking_uri: str, tmp_path: Path, monkeypatch) -> None:
    spec = load_spec(spec_file)
    store = CompareStore(tracking_uri, spec.experiment, spec.name)
    client, exp = store.client, store.experiment_id
    # before the comparison: one run finished (skip), one fitted but not tested (test only),
    # one that crashed mid-fit (stale, rerun from scratch)
    _make_run(client, exp, _tags("tiny", "none", 0, "4"), "FINISHED", test_metric=True)
    _make_run(client, exp, _tags("tiny", "none", 1, "4"), "FINISHED", test_metric=False)
    out = tmp_path / "report"
    (out / "runs" / "none-s1-f4" / "checkpoints").mkdir(parents=True)
    (out / "runs" / "none-s1-f4" / "checkpoints" / "last.ckpt").write_text("weights")
    crashed = _make_run(client, exp, _tags("tiny", "none", 0, "8"), "FAILED", test_metric=False)
    fake = FakeLightning(store)
    monkeypatch.setattr(runner_module, "_launch", fake)
    compare(str(spec_file), output=str(out))
    by_key: dict[str, list[str]] = {}
    for stage, key in fake.calls:
        by_key.setdefault(key, []).append(stage)
    assert "none-s0-f4" not in by_key
    assert by_key["none-s1-f4"] == ["test"]
    assert by_key["none-s0-f8"] == ["fit", "test"]
    assert len(by_key) == 7 and all(v in (["fit", "test"], ["test"]) for v in by_key.values())
    assert client.get_run(crashed).data.tags["compare.stale"] == "true"
    assert len(store.records()) == 8
    summary = client.get_run(store.summary_run())
    assert summary.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(summary.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/score_vs_tokens.png"} <= artifacts
    # a second call finds everything done and launches nothing
    fake.calls.clear()
    compare(str(spec_file), output=str(out))
    assert fake.calls == []


def test_failed_run_is_reported_and_raised(spec_file: Path, tracking_uri: str, tmp_path: Path, monkeypatch) -> None:
    spec = load_spec(spec_file)
    store = CompareStore(tracking_uri, spec.experiment, spec.name)
    monkeypatch.setattr(runner_module, "_launch", FakeLightning(store, fail={"fit:transv-s0-f4"}))
    with pytest.raises(CompareError, match="transv-s0-f4: exited with 1"):
        compare(str(spec_file), output=str(tmp_path / "report"))
    assert "| none | 4 | 2 |" in (tmp_path / "report" / "report.md").read_text()
    assert client_status(store) == "FAILED"


def client_status(store: CompareStore) -> str:
    return store.client.get_run(store.summary_run()).info.status


def test_variant_key_is_unique_per_run() -> None:
    from lightning_viper.compare.spec import Strategy

    s = Strategy("x")
    assert Variant(s, 0, None).key == "x-s0" and Variant(s, 0, None).frames_tag == "recipe"
