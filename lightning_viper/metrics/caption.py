"""Caption n-gram scores built on torchmetrics.text, with states that merge across processes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.text import rouge_score
from torchmetrics.text import BLEUScore

from lightning_viper.metrics.state_dtype import KeepStateDtype


class Bleu4(KeepStateDtype, BLEUScore):
    """Corpus BLEU-4 (torchmetrics ``BLEUScore``, n_gram=4, tokenizer 13a).

    Its states are n-gram sums that do not depend on earlier updates, so states of several
    instances (or processes) merge by addition; ``full_state_update=False`` says so, which also
    enables ``merge_state``.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__(n_gram=4)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure of one prediction against its best-matching reference."""
    scores = rouge_score(prediction, list(references), rouge_keys="rougeL", accumulate="best")
    return float(scores["rougeL_fmeasure"])


class RougeL(KeepStateDtype, Metric):
    """Mean per-sample ROUGE-L F-measure (best reference per sample; torchmetrics' rouge_score).

    States (summed over processes): ``fmeasure_sum`` and ``total``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    fmeasure_sum: Tensor
    total: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("fmeasure_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """``predictions``: one caption per sample; ``references``: that sample's reference captions."""
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} reference lists")
        for pred, refs in zip(predictions, references, strict=True):
            self.fmeasure_sum += rouge_l(pred, refs)
            self.total += 1

    def compute(self) -> Tensor:
        """Mean F-measure in [0, 1] (0 when no samples)."""
        return self.fmeasure_sum / self.total.clamp(min=1).float()
