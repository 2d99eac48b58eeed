"""Route generated answers to the metric of their task and collect one flat dict of scores."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_viper.data.tasks import TASKS
from lightning_viper.metrics.accuracy import CountingAccuracy, MultipleChoiceAccuracy, ParsedAccuracy
from lightning_viper.metrics.caption import Bleu4, RougeL, rouge_l
from lightning_viper.metrics.cider import CIDErD
from lightning_viper.metrics.grounding import TemporalGrounding, temporal_iou
from lightning_viper.metrics.grouped import GroupedAccuracy
from lightning_viper.metrics.parsing import (
    caption_references,
    normalize_text,
    parse_choice,
    parse_count,
    parse_span,
    target_choice,
)
from lightning_viper.metrics.state_dtype import KeepStateDtype


class QAExactMatch(ParsedAccuracy):
    """Open-ended QA: normalised exact match (case, punctuation and articles ignored)."""

    def update(self, predictions: Sequence[str], answers: Sequence[str]) -> None:
        """``predictions``: generated texts; ``answers``: reference answers."""
        matches = [int(normalize_text(p) == normalize_text(a)) for p, a in zip(predictions, answers, strict=True)]
        self._record(matches, [1] * len(matches))


class TaskCounts(KeepStateDtype, Metric):
    """Samples seen per task (summed over processes), so every process agrees on which tasks to report."""

    full_state_update = False
    counts: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("counts", default=torch.zeros(len(TASKS), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, tasks: Sequence[str]) -> None:
        """``tasks``: the task name of each sample."""
        self.counts += torch.tensor([sum(t == name for t in tasks) for name in TASKS], device=self.counts.device)

    def compute(self) -> Tensor:
        """(len(TASKS),) long: samples per task in ``TASKS`` order."""
        return self.counts


def _task(meta: dict[str, Any]) -> str:
    task = meta.get("task")
    if task not in TASKS:
        raise ValueError(f"sample meta has task={task!r}; expected one of {TASKS} in meta['task']")
    return str(task)


def _span(meta: dict[str, Any]) -> list[float]:
    span = meta.get("span")
    if span is None or len(span) != 2:
        raise ValueError(f"grounding sample needs meta['span'] = [start_s, end_s], got {span!r}")
    return [float(span[0]), float(span[1])]


def _count(meta: dict[str, Any]) -> int:
    target = parse_count(str(meta.get("answer", "")))
    if target is None:
        raise ValueError(f"count sample's meta['answer'] must hold a number, got {meta.get('answer')!r}")
    return target


def score_one(prediction: str, meta: dict[str, Any]) -> float:
    """Score of one sample in [0, 1] (for prediction files).

    mcq / count / qa: 1.0 if right else 0.0; grounding: the IoU; caption: ROUGE-L F-measure
    (CIDEr needs the whole set, so it has no per-sample value).
    """
    task = _task(meta)
    if task == "mcq":
        options = meta.get("options")
        choice = parse_choice(prediction, options)
        return float(
            choice is not None and choice == target_choice(meta.get("answer"), options, meta.get("answer_index"))
        )
    if task == "grounding":
        span = parse_span(prediction)
        return 0.0 if span is None else temporal_iou(span, _span(meta))
    if task == "count":
        return float(parse_count(prediction) == _count(meta))
    if task == "caption":
        return rouge_l(prediction, caption_references(meta))
    return float(normalize_text(prediction) == normalize_text(str(meta.get("answer", ""))))


class TaskMetrics(nn.Module):
    """One metric set per task; each sample goes to the metrics of ``meta['task']``.

    ``compute()`` returns only the tasks seen since the last ``reset()``, with keys
    ``mcq/acc``, ``mcq/unparsed`` (count), ``grounding/miou``, ``grounding/recall_{0.3,0.5,0.7}``,
    ``grounding/unparsed`` (count), ``count/acc``, ``caption/bleu4``, ``caption/rouge_l``,
    ``caption/cider`` and ``qa/acc`` (normalised exact match). Submetrics are torchmetrics
    ``Metric`` objects, so they sync across processes at ``compute()``.

    Multiple-choice samples whose meta carries ``groups`` (from their annotation, e.g. VideoMME's
    ``{"duration": "short", "task": "Counting Problem"}``) also get ``mcq_acc/<group>/<value>``
    (e.g. ``mcq_acc/duration/short``, ``mcq_acc/task/Counting Problem``) and
    ``mcq_acc_macro_task``, the mean over task types (MLVU's headline number); see
    :class:`~lightning_viper.metrics.grouped.GroupedAccuracy`.
    """

    score_one = staticmethod(score_one)  # ``TaskMetrics.score_one(prediction, meta)``: per-sample score

    def __init__(self) -> None:
        super().__init__()
        self.mcq = MultipleChoiceAccuracy()
        self.grounding = TemporalGrounding()
        self.count = CountingAccuracy()
        self.qa = QAExactMatch()
        self.bleu4 = Bleu4()
        self.rouge_l = RougeL()
        self.cider = CIDErD()
        self.mcq_groups = GroupedAccuracy()
        self.seen = TaskCounts()

    def update(self, predictions: list[str], meta: list[dict[str, Any]]) -> None:
        """``predictions``: generated answer text per sample; ``meta``: the batch's per-sample meta."""
        if len(predictions) != len(meta):
            raise ValueError(f"got {len(predictions)} predictions for {len(meta)} meta entries; they must match")
        groups: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for pred, m in zip(predictions, meta, strict=True):
            groups[_task(m)].append((pred, m))
        self.seen.update([_task(m) for m in meta])
        for task, items in groups.items():
            preds = [p for p, _ in items]
            metas = [m for _, m in items]
            if task == "mcq":
                options = [m.get("options") for m in metas]
                targets = [target_choice(m.get("answer"), m.get("options"), m.get("answer_index")) for m in metas]
                self.mcq.update(preds, targets, options)
                self.mcq_groups.update(
                    [m.get("groups") or {} for m in metas], [score_one(p, m) == 1.0 for p, m in items]
                )
            elif task == "grounding":
                self.grounding.update(preds, [_span(m) for m in metas])
            elif task == "count":
                self.count.update(preds, [_count(m) for m in metas])
            elif task == "caption":
                refs = [caption_references(m) for m in metas]
                self.bleu4.update(preds, refs)
                self.rouge_l.update(preds, refs)
                self.cider.update(preds, refs)
            else:
                self.qa.update(preds, [str(m.get("answer", "")) for m in metas])

    def compute(self) -> dict[str, Tensor]:
        """Flat dict of scores for the tasks seen (see the class docstring for the keys).

        Which tasks were seen is decided from counts summed over processes, so every process
        computes (and syncs) the same submetrics.
        """
        with _quiet_unupdated():
            counts = dict(zip(TASKS, self.seen.compute().tolist(), strict=True))
            out: dict[str, Tensor] = {}
            if counts["mcq"]:
                mcq = self.mcq.compute()
                out["mcq/acc"], out["mcq/unparsed"] = mcq["acc"], mcq["unparsed"]
                for key, value in self.mcq_groups.compute().items():
                    out[f"mcq_acc_{key}" if key.startswith("macro_") else f"mcq_acc/{key}"] = value
            if counts["grounding"]:
                out.update({f"grounding/{k}": v for k, v in self.grounding.compute().items()})
            if counts["count"]:
                out["count/acc"] = self.count.compute()["acc"]
            if counts["caption"]:
                out["caption/bleu4"] = self.bleu4.compute()
                out["caption/rouge_l"] = self.rouge_l.compute()
                out["caption/cider"] = self.cider.compute()
            if counts["qa"]:
                out["qa/acc"] = self.qa.compute()["acc"]
        return out

    def reset(self) -> None:
        """Clear every submetric (call at the start of each evaluation epoch)."""
        for metric in self.metrics():
            metric.reset()

    def metrics(self) -> list[Metric]:
        """The submetrics, in a fixed order (for merging states of two instances)."""
        metrics = [self.mcq, self.grounding, self.count, self.qa, self.bleu4, self.rouge_l, self.cider]
        return [*metrics, self.mcq_groups, self.seen]

    def merge(self, other: TaskMetrics) -> None:
        """Add the states of ``other`` into this one (what a sync across processes does)."""
        for mine, theirs in zip(self.metrics(), other.metrics(), strict=True):
            mine.merge_state(theirs)


@contextmanager
def _quiet_unupdated() -> Iterator[None]:
    """Silence torchmetrics' warning for computing a metric this process never updated (others did)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
        yield
