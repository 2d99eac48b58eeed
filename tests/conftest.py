"""Fixtures shared by the whole suite: one torch thread per test, new MLflow stores with template tables,
a session-wide demo tokenizer, one synthetic-data cache and one tiny trained demo checkpoint for every
test that only reads one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lightning_viper.text.tokenizer import build_demo_tokenizer, load_tokenizer
from tests.fixtures_demo import Tiny, train_tiny
from tests.fixtures_mlflow import tables_from_template


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mlflow_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's template MLflow tables are built, once (tests/fixtures_mlflow.py)."""
    return tmp_path_factory.mktemp("mlflow-cache")


@pytest.fixture(autouse=True)
def _mlflow_tables_from_template(request: pytest.FixtureRequest) -> Iterator[None]:
    """A sqlite store MLflow creates in this process gets copied tables (saves 1.5-3 s per store on a
    2-core CPU). Without MLflow imported yet (no test module of this run uses it) nothing is patched."""
    if "mlflow" not in sys.modules:
        yield
        return
    with tables_from_template(request.getfixturevalue("mlflow_cache")):
        yield


@pytest.fixture(scope="session")
def demo_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_tokenizer(tmp_path_factory.mktemp("tok") / "demo")


@pytest.fixture(scope="session")
def demo_tokenizer(demo_tokenizer_dir: Path):
    return load_tokenizer(demo_tokenizer_dir)


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic-data cache for the whole session (generated on first use, keyed by the data's knobs)."""
    return tmp_path_factory.mktemp("synth")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path, mlflow_cache: Path) -> Tiny:
    """The trimmed demo fitted for 2 steps, once per session; tests read it and never write into its folder
    (except runs logged to its MLflow store)."""
    with tables_from_template(mlflow_cache):  # session fixtures are set up before the autouse one above
        return train_tiny(tmp_path_factory.mktemp("tiny"), synth_cache)
