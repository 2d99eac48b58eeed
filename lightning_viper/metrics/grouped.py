"""Accuracy broken down by annotation groups (duration bucket, task type, ...), as benchmarks report it.

Each sample carries ``groups`` from its annotation, e.g. ``{"duration": "short", "task":
"Counting Problem"}`` (VideoMME), ``{"task": "plotQA"}`` (MLVU) or ``{"task": ["entity
recognition", "key information retrieval"]}`` (LVBench: a sample counts in every type it names).
The metric reports the accuracy of every ``(group, value)`` seen, and the macro average over the
values of a group (MLVU's headline number is the mean over its task types; here the mean is over
the types present in the evaluated set).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_viper.metrics.state_dtype import KeepStateDtype
from lightning_viper.metrics.text_state import cat_state, decode_texts, encode_texts

_SEP = "\x1f"  # separates the "name=value" labels of one sample in the byte state
Groups = Mapping[str, str | Sequence[str]]


def group_labels(groups: Groups) -> list[str]:
    """``"name=value"`` for every value of every group (a list value gives one label per item)."""
    labels = []
    for name, value in groups.items():
        for item in [value] if isinstance(value, str) else value:
            labels.append(f"{name}={item}".replace(_SEP, " "))
    return labels


def metric_name(text: str) -> str:
    """``text`` with the characters MLflow refuses in metric keys (all but letters, digits,
    ``_ . -`` and space) replaced by ``_``; ``/`` too, so a value never adds a key level."""
    return re.sub(r"[^A-Za-z0-9_. -]", "_", text).strip() or "_"


class GroupedAccuracy(KeepStateDtype, Metric):
    """Accuracy per group value.

    States: per sample its labels (UTF-8 bytes, float32) and whether it was right, concatenated
    over processes (``dist_reduce_fx="cat"``), so every process sees every group value.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    label_bytes: list[Tensor] | Tensor
    label_lens: list[Tensor] | Tensor
    correct: list[Tensor] | Tensor

    def __init__(self, macro: Sequence[str] = ("task",)) -> None:
        super().__init__()
        self.macro = tuple(macro)
        for name in ("label_bytes", "label_lens", "correct"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, groups: Sequence[Groups], correct: Sequence[bool]) -> None:
        """``groups``: each sample's groups (``{}`` for none); ``correct``: whether it was answered right."""
        if len(groups) != len(correct):
            raise ValueError(f"got {len(groups)} group maps but {len(correct)} correctness flags")
        flat, lens = encode_texts([_SEP.join(group_labels(g)) for g in groups])
        self.label_bytes.append(flat.to(self.device))  # type: ignore[union-attr]
        self.label_lens.append(lens.to(self.device))  # type: ignore[union-attr]
        self.correct.append(torch.tensor([float(c) for c in correct], device=self.device))  # type: ignore[union-attr]

    def counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """``(name, value) -> (right, total)`` over every sample seen (after any process sync)."""
        lens = cat_state(self.label_lens)
        if lens.numel() == 0:
            return {}
        out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        rights = cat_state(self.correct).tolist()
        for joined, right in zip(decode_texts(cat_state(self.label_bytes), lens), rights, strict=True):
            for label in joined.split(_SEP) if joined else []:
                name, _, value = label.partition("=")
                out[(name, value)][0] += int(right)
                out[(name, value)][1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def compute(self) -> dict[str, Tensor]:
        """``"<name>/<value>"`` -> accuracy for every group value seen, and ``"macro_<name>"`` -> the
        mean of its values' accuracies for each group named in ``macro`` (keys made MLflow-safe
        with :func:`metric_name`)."""
        out: dict[str, Tensor] = {}
        per_name: dict[str, list[float]] = defaultdict(list)
        for (name, value), (right, total) in self.counts().items():
            acc = right / total
            out[f"{metric_name(name)}/{metric_name(value)}"] = torch.tensor(acc)
            per_name[name].append(acc)
        for name in self.macro:
            if not (accs := per_name.get(name)):
                continue
            out[f"macro_{metric_name(name)}"] = torch.tensor(sum(accs) / len(accs))
        return out
