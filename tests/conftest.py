"""Fixtures shared by the whole suite: one torch thread per test, a session-wide demo tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_viper.text.tokenizer import build_demo_tokenizer, load_tokenizer


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_tokenizer(tmp_path_factory.mktemp("tok") / "demo")


@pytest.fixture(scope="session")
def demo_tokenizer(demo_tokenizer_dir: Path):
    return load_tokenizer(demo_tokenizer_dir)
