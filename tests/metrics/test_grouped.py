"""Grouped multiple-choice accuracy (VideoMME / LongVideoBench / MLVU / LVBench breakdowns)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lightning_viper.metrics import TaskMetrics
from lightning_viper.metrics.grouped import GroupedAccuracy, metric_name
from lightning_viper.tracking.mlflow import MLflowLogger

OPTIONS = ["red", "green", "blue", "yellow"]


def mcq(answer_index: int, **groups: str | list[str]) -> dict:
    return {"task": "mcq", "options": OPTIONS, "answer_index": answer_index, "groups": groups}


# (prediction, meta): right / wrong by hand, in VideoMME-style duration buckets and task types
SAMPLES = [
    ("A", mcq(0, duration="short", task="Counting Problem")),  # right
    ("B", mcq(0, duration="short", task="Counting Problem")),  # wrong
    ("The answer is C", mcq(2, duration="short", task="Temporal/Reasoning")),  # right
    ("green", mcq(1, duration="medium", task="Temporal/Reasoning")),  # right (option text)
    ("D", mcq(3, duration="medium", task="OCR Problems")),  # right
    ("C", mcq(0, duration="long", task="Counting Problem")),  # wrong
    ("no idea", mcq(1, duration="long", task="Temporal/Reasoning")),  # unparsed: wrong
    ("A", {"task": "mcq", "options": OPTIONS, "answer_index": 0}),  # right, no groups
    ("from 0 to 1 seconds", {"task": "grounding", "span": [0.0, 1.0], "groups": {"duration": "short"}}),
]


def test_breakdowns_match_hand_counts() -> None:
    metrics = TaskMetrics()
    metrics.update([p for p, _ in SAMPLES[:4]], [m for _, m in SAMPLES[:4]])  # two batches
    metrics.update([p for p, _ in SAMPLES[4:]], [m for _, m in SAMPLES[4:]])
    out = {k: float(v) for k, v in metrics.compute().items()}
    assert out["mcq/acc"] == pytest.approx(5 / 8)  # every mcq sample, grouped or not
    expected = {
        "mcq_acc/duration/short": 2 / 3,  # samples 1-3 (the grounding sample is not mcq)
        "mcq_acc/duration/medium": 2 / 2,
        "mcq_acc/duration/long": 0 / 2,
        "mcq_acc/task/Counting Problem": 1 / 3,
        "mcq_acc/task/Temporal_Reasoning": 2 / 3,  # '/' in a value becomes '_'
        "mcq_acc/task/OCR Problems": 1 / 1,
        "mcq_acc_macro_task": (1 / 3 + 2 / 3 + 1) / 3,  # mean over task types, not over samples
    }
    assert {k: v for k, v in out.items() if k.startswith("mcq_acc")} == pytest.approx(expected)
    metrics.reset()
    metrics.update(["A"], [SAMPLES[-2][1]])
    assert not any(k.startswith("mcq_acc") for k in metrics.compute())  # no groups: no breakdown


def test_a_sample_counts_in_every_type_it_names() -> None:
    metric = GroupedAccuracy()
    metric.update([{"task": ["entity recognition", "reasoning"]}, {"task": ["reasoning"]}, {}], [True, False, True])
    out = {k: float(v) for k, v in metric.compute().items()}
    assert out == pytest.approx({"task/entity recognition": 1.0, "task/reasoning": 0.5, "macro_task": (1.0 + 0.5) / 2})
    assert metric.counts() == {("task", "entity recognition"): (1, 1), ("task", "reasoning"): (1, 2)}
    with pytest.raises(ValueError, match="2 group maps but 1 correctness flags"):
        metric.update([{}, {}], [True])


def test_merged_states_equal_one_metric_that_saw_everything() -> None:
    one, a, b = TaskMetrics(), TaskMetrics(), TaskMetrics()
    one.update([p for p, _ in SAMPLES], [m for _, m in SAMPLES])
    a.update([p for p, _ in SAMPLES[:5]], [m for _, m in SAMPLES[:5]])
    b.update([p for p, _ in SAMPLES[5:]], [m for _, m in SAMPLES[5:]])
    a.merge(b)
    expected = {k: float(v) for k, v in one.compute().items()}
    assert {k: float(v) for k, v in a.compute().items()} == pytest.approx(expected)


def test_breakdown_keys_survive_mlflow(tmp_path: Path) -> None:
    metrics = TaskMetrics()
    metrics.update([p for p, _ in SAMPLES], [m for _, m in SAMPLES])
    logged = {f"test/{k}": float(v) for k, v in metrics.compute().items()}
    logger = MLflowLogger(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="groups")
    logger.log_metrics(logged, step=0)
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(logger.run_id)
    assert run.data.metrics == pytest.approx(logged)  # every key kept as written, none renamed
    assert run.data.metrics["test/mcq_acc/duration/short"] == pytest.approx(2 / 3)


def test_metric_name_keeps_only_mlflow_characters() -> None:
    assert metric_name("Action Reasoning (AR)") == "Action Reasoning _AR_"
    assert metric_name("a/b=c") == "a_b_c" and metric_name("") == "_"
