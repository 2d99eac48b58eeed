"""One tiny trained checkpoint for the eval tests."""

from __future__ import annotations

import pytest

from tests.eval.tiny import Tiny, train_tiny


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return train_tiny(tmp_path_factory.mktemp("tiny"), tmp_path_factory.mktemp("synth-eval"))
