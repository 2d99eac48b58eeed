"""Task metrics against values worked out by hand (the arithmetic is written next to each number)."""

import math

import pytest
import torch

from lightning_viper.metrics import (
    CountingAccuracy,
    MultipleChoiceAccuracy,
    RougeL,
    TaskMetrics,
    TemporalGrounding,
    score_one,
)

OPTIONS = ["red", "green", "blue"]


def test_multiple_choice_accuracy() -> None:
    metric = MultipleChoiceAccuracy()
    # right ("B" = 1), wrong ("(C)" = 2 vs 0), unparsed ("banana"), right ("green" = 1)
    metric.update(["B", "(C)", "banana", "green"], [1, 0, 2, 1], [OPTIONS] * 4)
    out = metric.compute()
    assert out["acc"].item() == pytest.approx(2 / 4)
    assert out["unparsed"].item() == 1


def test_temporal_grounding() -> None:
    metric = TemporalGrounding()
    preds = ["from 0 to 10 seconds", "[2, 4]", "between 0 and 6 s", "no idea"]
    spans = [[5, 15], [2, 4], [2, 8], [1, 2]]
    metric.update(preds, spans)
    out = metric.compute()
    # IoUs: [0,10]^[5,15] = 5/15; exact = 1; [0,6]^[2,8] = 4/8; unparsed = 0
    ious = [1 / 3, 1.0, 0.5, 0.0]
    assert out["miou"].item() == pytest.approx(sum(ious) / 4)  # 0.458333
    assert out["recall_0.3"].item() == pytest.approx(3 / 4)
    assert out["recall_0.5"].item() == pytest.approx(2 / 4)
    assert out["recall_0.7"].item() == pytest.approx(1 / 4)
    assert out["unparsed"].item() == 1


def test_counting_accuracy() -> None:
    metric = CountingAccuracy()
    metric.update(["three", "4 dogs", "none"], [3, 5, 0])  # right, wrong, right
    assert metric.compute()["acc"].item() == pytest.approx(2 / 3)


def test_rouge_l_by_longest_common_subsequence() -> None:
    metric = RougeL()
    # "the cat sat down" vs "the cat lay down": LCS = the cat down (3); P = R = 3/4; F = 0.75
    # "cat" vs best of ["dog", "a cat"]: LCS 1 with "a cat"; P = 1, R = 1/2; F = 2/3
    metric.update(["the cat sat down", "cat"], [["the cat lay down"], ["dog", "a cat"]])
    assert metric.compute().item() == pytest.approx((0.75 + 2 / 3) / 2, abs=1e-4)


def _mixed_samples() -> tuple[list[str], list[dict]]:
    preds = ["B", "banana", "from 0 to 10 seconds", "[2, 4]", "three", "a cat", "a cat cat", "Paris"]
    meta = [
        {"task": "mcq", "options": OPTIONS, "answer_index": 1, "answer": "green"},
        {"task": "mcq", "options": OPTIONS, "answer": "C"},
        {"task": "grounding", "span": [5.0, 15.0], "answer": "from 5 to 15 seconds"},
        {"task": "grounding", "span": [2.0, 4.0], "answer": "from 2 to 4 seconds"},
        {"task": "count", "answer": "3"},
        {"task": "caption", "answer": "a dog"},
        {"task": "caption", "references": ["a cat"]},
        {"task": "qa", "answer": "paris."},
    ]
    return preds, meta


def test_task_metrics_routes_by_task_and_reports_seen_tasks_only() -> None:
    metrics = TaskMetrics()
    metrics.update(["B"], [{"task": "mcq", "options": OPTIONS, "answer_index": 1}])
    assert set(metrics.compute()) == {"mcq/acc", "mcq/unparsed"}
    metrics.reset()
    preds, meta = _mixed_samples()
    metrics.update(preds, meta)
    out = metrics.compute()
    assert set(out) == {
        "mcq/acc",
        "mcq/unparsed",
        "grounding/miou",
        "grounding/recall_0.3",
        "grounding/recall_0.5",
        "grounding/recall_0.7",
        "grounding/unparsed",
        "count/acc",
        "caption/bleu4",
        "caption/rouge_l",
        "caption/cider",
        "qa/acc",
    }
    assert out["mcq/acc"].item() == pytest.approx(0.5)
    assert out["mcq/unparsed"].item() == 1
    assert out["grounding/miou"].item() == pytest.approx((1 / 3 + 1) / 2)
    assert out["grounding/recall_0.5"].item() == pytest.approx(0.5)
    assert out["count/acc"].item() == 1.0
    assert out["qa/acc"].item() == 1.0
    # CIDEr: refs "a dog" / "a cat" -> the hand-worked corpus of test_cider.py: (0 + 2.97614) / 2
    assert out["caption/cider"].item() == pytest.approx(2.9761430 / 2, abs=1e-5)


def test_merged_states_equal_one_pass() -> None:
    """Two instances (as on two processes) merged == one instance that saw everything (CIDEr idf included)."""
    preds, meta = _mixed_samples()
    whole = TaskMetrics()
    whole.update(preds, meta)
    first, second = TaskMetrics(), TaskMetrics()
    first.update(preds[::2], meta[::2])
    second.update(preds[1::2], meta[1::2])
    first.merge(second)
    merged, expected = first.compute(), whole.compute()
    assert set(merged) == set(expected)
    for key, value in expected.items():
        assert merged[key].item() == pytest.approx(value.item(), abs=1e-6), key


def test_states_keep_their_dtype_under_module_casts() -> None:
    metrics = TaskMetrics().to(torch.bfloat16)
    preds, meta = _mixed_samples()
    metrics.update(preds * 200, meta * 200)  # 400 grounding samples: bf16 could not count them exactly
    assert metrics.grounding.iou_sum.dtype == torch.float32
    assert metrics.compute()["grounding/miou"].item() == pytest.approx((1 / 3 + 1) / 2, abs=1e-5)


@pytest.mark.parametrize(
    ("prediction", "meta", "expected"),
    [
        ("(B)", {"task": "mcq", "options": OPTIONS, "answer_index": 1}, 1.0),
        ("red", {"task": "mcq", "options": OPTIONS, "answer": "B"}, 0.0),
        ("between 0 and 6 s", {"task": "grounding", "span": [2, 8]}, 0.5),
        ("seven", {"task": "count", "answer": "7"}, 1.0),
        ("the cat sat down", {"task": "caption", "answer": "the cat lay down"}, 0.75),
        ("The Paris", {"task": "qa", "answer": "paris"}, 1.0),
    ],
)
def test_score_one(prediction: str, meta: dict, expected: float) -> None:
    assert score_one(prediction, meta) == pytest.approx(expected, abs=1e-4)


def test_unknown_task_is_rejected_with_a_hint() -> None:
    with pytest.raises(ValueError, match="meta\\['task'\\]"):
        TaskMetrics().update(["x"], [{"task": "vqa"}])


def test_grounding_iou_is_zero_for_disjoint_spans() -> None:
    metric = TemporalGrounding()
    metric.update(["from 0 to 1 seconds"], [[2, 3]])
    assert metric.compute()["miou"].item() == 0.0
    assert not math.isnan(metric.compute()["recall_0.3"].item())
