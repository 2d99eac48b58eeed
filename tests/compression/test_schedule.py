"""validate_schedule: layer range, attention layers, order, and non-growing keep ratios."""

from __future__ import annotations

import pytest

from lightning_viper.compression import TokenDrop, TransV, validate_schedule

from .conftest import FakeBackbone  # layers: mamba, attention, mlp, decoder


def test_valid_schedules() -> None:
    backbone = FakeBackbone()
    validate_schedule([], backbone)
    validate_schedule([TransV(0, 0.5), TokenDrop(1, 0.5, "attention"), TokenDrop(3, 0.1, "attention")], backbone)
    validate_schedule([TokenDrop(2, 0.8), TokenDrop(2, 0.4)], backbone)  # same layer: run in list order


@pytest.mark.parametrize(
    ("stages", "pattern"),
    [
        ([TokenDrop(4, 0.5)], r"TokenDrop\(layer=4, keep=0.5, selector=uniform\): layer 4 is out of range"),
        ([TokenDrop(-1, 0.5)], r"TokenDrop\(layer=-1.*out of range"),
        ([TransV(2, 0.5, "attention")], r"TransV\(layer=2, keep=0.5, selector=attention\).*'mlp'.*\[1, 3\]"),
        ([TokenDrop(0, 0.5), TokenDrop(2, 0.7)], r"TokenDrop\(layer=2, keep=0.7.*keeps more than.*TokenDrop\(layer=0"),
        ([TransV(2, 0.5), TokenDrop(1, 0.2)], r"TokenDrop\(layer=1, keep=0.2.*earlier layer"),
    ],
)
def test_errors_name_the_stage(stages: list, pattern: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=pattern):
        validate_schedule(stages, FakeBackbone())


def test_keep_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"TransV\(layer=3\): keep must be in \[0, 1\]"):
        TransV(3, 1.5)
