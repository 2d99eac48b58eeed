"""Task metrics (torchmetrics) for generated answers: multiple choice, grounding, counting, captions."""

from lightning_viper.metrics.accuracy import CountingAccuracy, MultipleChoiceAccuracy
from lightning_viper.metrics.caption import Bleu4, RougeL
from lightning_viper.metrics.cider import CIDErD, cider_d_scores
from lightning_viper.metrics.grounding import TemporalGrounding, temporal_iou
from lightning_viper.metrics.grouped import GroupedAccuracy
from lightning_viper.metrics.parsing import parse_choice, parse_count, parse_span
from lightning_viper.metrics.task_metrics import TaskMetrics, score_one

__all__ = [
    "Bleu4",
    "CIDErD",
    "CountingAccuracy",
    "GroupedAccuracy",
    "MultipleChoiceAccuracy",
    "RougeL",
    "TaskMetrics",
    "TemporalGrounding",
    "cider_d_scores",
    "parse_choice",
    "parse_count",
    "parse_span",
    "score_one",
    "temporal_iou",
]
