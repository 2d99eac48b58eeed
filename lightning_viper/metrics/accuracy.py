"""Accuracy over parsed answers: multiple choice and counting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_viper.metrics.parsing import parse_choice, parse_count
from lightning_viper.metrics.state_dtype import KeepStateDtype


class ParsedAccuracy(KeepStateDtype, Metric):
    """Fraction of samples whose parsed prediction equals the target; unparseable ones are wrong.

    States (summed over processes): ``correct``, ``total``, ``unparsed`` (int64 counts).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    correct: Tensor
    total: Tensor
    unparsed: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("unparsed", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _record(self, parsed: Sequence[int | None], targets: Sequence[int]) -> None:
        if len(parsed) != len(targets):
            raise ValueError(
                f"got {len(parsed)} predictions but {len(targets)} targets; pass one target per prediction"
            )
        self.correct += sum(int(p is not None and p == t) for p, t in zip(parsed, targets, strict=True))
        self.unparsed += sum(int(p is None) for p in parsed)
        self.total += len(parsed)

    def compute(self) -> dict[str, Tensor]:
        """``acc`` in [0, 1] (0 when no samples) and ``unparsed``, the count of unreadable answers."""
        acc = self.correct.float() / self.total.clamp(min=1).float()
        return {"acc": acc, "unparsed": self.unparsed.float()}


class MultipleChoiceAccuracy(ParsedAccuracy):
    """Multiple-choice accuracy; answers parsed by :func:`parse_choice` ("B", "(B)", "The answer is B", "red")."""

    def update(
        self, predictions: Sequence[str], targets: Sequence[int], options: Sequence[Sequence[str] | None]
    ) -> None:
        """``predictions``: generated texts; ``targets``: correct option indices; ``options``: option texts."""
        parsed = [parse_choice(p, o) for p, o in zip(predictions, options, strict=True)]
        self._record(parsed, [int(t) for t in targets])


class CountingAccuracy(ParsedAccuracy):
    """Counting accuracy: the first integer or number word of the prediction must equal the target."""

    def update(self, predictions: Sequence[str], targets: Sequence[int]) -> None:
        """``predictions``: generated texts; ``targets``: the true counts."""
        self._record([parse_count(p) for p in predictions], [int(t) for t in targets])
