"""Fixtures for end-to-end CLI runs of the demo recipe on tiny data (``synth_cache``: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lightning_viper.cli.main import VideoCLI
from tests.fixtures_demo import DEMO, ROOT, write_overlay

__all__ = ["DEMO", "ROOT", "demo_cli", "write_overlay"]  # tests/cli/*.py import the trimmed demo from here


@pytest.fixture
def demo_cli(tmp_path: Path, synth_cache: Path) -> Callable[..., VideoCLI]:
    """Run ``lightning <subcommand>`` on the demo recipe, trimmed, with its own MLflow store."""
    overlay = write_overlay(tmp_path, synth_cache)

    def run(subcommand: str, *overrides: str) -> VideoCLI:
        args = [subcommand, "--config", str(DEMO), "--config", str(overlay), *overrides]
        return VideoCLI(args=args)

    run.tmp_path = tmp_path  # type: ignore[attr-defined]
    return run
