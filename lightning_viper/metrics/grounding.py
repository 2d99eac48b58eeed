"""Temporal grounding: mean IoU and Recall@IoU of predicted time spans."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_viper.metrics.parsing import parse_span
from lightning_viper.metrics.state_dtype import KeepStateDtype


def temporal_iou(pred: tuple[float, float], target: Sequence[float]) -> float:
    """IoU of two 1-D intervals in seconds; 0 when the union is empty."""
    (ps, pe), (ts, te) = pred, (float(target[0]), float(target[1]))
    inter = max(0.0, min(pe, te) - max(ps, ts))
    union = (pe - ps) + (te - ts) - inter
    return inter / union if union > 0 else 0.0


class TemporalGrounding(KeepStateDtype, Metric):
    """mIoU and Recall@IoU>=t of spans parsed from generated text (:func:`parse_span`).

    Unparseable predictions get IoU 0 and are counted. States are summed over processes:
    ``iou_sum`` (float), ``hits`` (one count per threshold), ``total``, ``unparsed``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    iou_sum: Tensor
    hits: Tensor
    total: Tensor
    unparsed: Tensor

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        super().__init__()
        self.thresholds = tuple(float(t) for t in thresholds)
        self.add_state("iou_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("hits", default=torch.zeros(len(self.thresholds), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("unparsed", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], spans: Sequence[Sequence[float]]) -> None:
        """``predictions``: generated texts; ``spans``: true ``[start_s, end_s]`` per sample."""
        if len(predictions) != len(spans):
            raise ValueError(f"got {len(predictions)} predictions but {len(spans)} spans; pass one span per prediction")
        for text, span in zip(predictions, spans, strict=True):
            parsed = parse_span(text)
            iou = 0.0 if parsed is None else temporal_iou(parsed, span)
            self.unparsed += int(parsed is None)
            self.iou_sum += iou
            self.hits += torch.tensor([int(iou >= t) for t in self.thresholds], device=self.hits.device)
            self.total += 1

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``recall_<t>`` for each threshold (fractions in [0, 1]) and ``unparsed`` (a count)."""
        n = self.total.clamp(min=1).float()
        out = {"miou": self.iou_sum / n}
        for i, t in enumerate(self.thresholds):
            out[f"recall_{t:g}"] = self.hits[i].float() / n
        out["unparsed"] = self.unparsed.float()
        return out
