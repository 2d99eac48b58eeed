"""The LR schedule (transformers' cosine with warmup) against its equation and the project's earlier curve."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_viper.optim import cosine_with_warmup


def lr_curve(total: int, warmup_ratio: float, lr: float = 1e-3) -> list[float]:
    """The learning rate of every optimizer step 0 .. total-1 (as Lightning steps it: interval 'step')."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr)
    scheduler = cosine_with_warmup(optimizer, total, warmup_ratio)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def cosine_reference(step: int, total: int, warmup: int, lr: float) -> float:
    """lr * step / W in warmup, then lr * (1 + cos(pi * (step - W) / (T - W))) / 2."""
    if step < warmup:
        return lr * step / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def earlier_curve(step: int, total: int, warmup: int, lr: float) -> float:
    """The project's own schedule before it used transformers': warmup (step + 1) / W, same decay."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


@pytest.mark.parametrize(("total", "ratio", "warmup"), [(300, 0.03, 9), (50, 0.1, 5), (20, 0.0, 0), (3, 0.5, 2)])
def test_schedule_follows_the_equation(total: int, ratio: float, warmup: int) -> None:
    curve = lr_curve(total, ratio)
    assert curve == pytest.approx([cosine_reference(s, total, warmup, 1e-3) for s in range(total)], abs=1e-12)


@pytest.mark.parametrize(("total", "ratio", "warmup"), [(300, 0.03, 9), (50, 0.1, 5), (20, 0.0, 0)])
def test_decay_is_the_earlier_curve_and_warmup_lags_it_by_one_step(total: int, ratio: float, warmup: int) -> None:
    curve = lr_curve(total, ratio)
    earlier = [earlier_curve(s, total, warmup, 1e-3) for s in range(total)]
    assert curve[warmup:] == pytest.approx(earlier[warmup:], abs=1e-12)  # the whole cosine phase is unchanged
    assert curve[1:warmup] == pytest.approx(earlier[: max(0, warmup - 1)], abs=1e-12)  # warmup: from 0, one step behind
    assert curve[0] == (0.0 if warmup else 1e-3)


def test_a_one_step_run_still_gets_a_schedule() -> None:
    assert lr_curve(1, 0.03) == [0.0]
    assert lr_curve(1, 0.0) == [pytest.approx(1e-3)]
