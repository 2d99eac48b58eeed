"""NanGuard and Preemption survive an overlay that replaces ``trainer.callbacks``; only an explicit
``guards: false`` runs without them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from lightning import Callback

from lightning_viper.callbacks import NanGuard, Preemption
from lightning_viper.cli.main import VideoCLI
from tests.cli.conftest import DEMO, write_overlay

ADDED = "trainer.callbacks has no {}: added it with its defaults (--guards=false runs without it)"


def _built(tmp_path: Path, synth_cache: Path, *args: str) -> list[Callback]:
    """The callbacks of the trainer built from the demo, the test overlay (which lists callbacks but
    no guard) and ``args``; nothing is run."""
    overlay = write_overlay(tmp_path, synth_cache)
    cli = VideoCLI(args=["--config", str(DEMO), "--config", str(overlay), *args], run=False)
    return list(cli.trainer.callbacks)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lightning_viper" and r.levelno == level]


def test_an_overlay_that_replaces_the_callbacks_keeps_the_guards(
    tmp_path: Path, synth_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="lightning_viper"):
        callbacks = _built(tmp_path, synth_cache)
    guards = [cb for cb in callbacks if isinstance(cb, NanGuard | Preemption)]
    assert [type(cb) for cb in guards] == [NanGuard, Preemption]
    assert guards[0].patience == 3  # NanGuard's defaults
    assert _messages(caplog, logging.INFO)[:2] == [ADDED.format("NanGuard"), ADDED.format("Preemption")]


def test_guards_false_on_the_command_line_runs_without_them(
    tmp_path: Path, synth_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    only = json.dumps([{"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"}])
    with caplog.at_level(logging.INFO, logger="lightning_viper"):
        callbacks = _built(tmp_path, synth_cache, f"--trainer.callbacks={only}", "--guards=false")
    assert not [cb for cb in callbacks if isinstance(cb, NanGuard | Preemption)]
    warnings = _messages(caplog, logging.WARNING)
    assert any(w.startswith("guards: false: running without NanGuard (NaN/Inf") for w in warnings), warnings
    assert any(w.startswith("guards: false: running without Preemption (SIGTERM") for w in warnings), warnings
    assert not [m for m in _messages(caplog, logging.INFO) if m.startswith("trainer.callbacks has no")]


def test_guards_false_in_a_config_keeps_a_guard_it_lists(tmp_path: Path, synth_cache: Path) -> None:
    config = tmp_path / "no_guards.yaml"
    config.write_text(
        "guards: false\n"
        "trainer:\n  callbacks:\n    - class_path: lightning_viper.callbacks.NanGuard\n      init_args: {patience: 7}\n"
    )
    callbacks = _built(tmp_path, synth_cache, "--config", str(config))
    (guard,) = [cb for cb in callbacks if isinstance(cb, NanGuard | Preemption)]
    assert isinstance(guard, NanGuard) and guard.patience == 7, "listed, so kept; Preemption not added"
