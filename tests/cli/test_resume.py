"""Exact mid-epoch resume: a fit killed with SIGKILL and resumed from ``last`` trains on exactly the
samples, in the same order, as an uninterrupted fit with the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import write_overlay

ROOT = Path(__file__).resolve().parents[2]
STEPS, KILL_AT = 10, 6  # 4 batches per epoch: the kill falls in the middle of the second epoch


def _fit(tmp_path: Path, overlay: Path, workers: int, *extra: str, kill_at: int | None = None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("VIPER_TEST_KILL_AT", None)
    if kill_at is not None:
        env["VIPER_TEST_KILL_AT"] = str(kill_at)
    cmd = [sys.executable, "-m", "lightning_viper.cli.main", "fit", "--config", str(ROOT / "recipes/demo.yaml")]
    cmd += ["--config", str(overlay), f"--trainer.max_steps={STEPS}", f"--data.init_args.num_workers={workers}"]
    proc = subprocess.run([*cmd, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if kill_at is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode


def _keys(path: Path) -> list[list[str]]:
    return [json.loads(line)["keys"] for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_fit_sees_the_uninterrupted_stream(tmp_path: Path, synth_cache: Path, workers: int) -> None:
    runs = {}
    for name in ("whole", "killed"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        overlay = write_overlay(run_dir, synth_cache)
        # a checkpoint after every step (monitor: null, since jsonargparse merges this entry with the
        # recipe's ModelCheckpoint at the same list position, which monitors val/loss)
        every_step = "save_last: true, every_n_train_steps: 1, monitor: null}"
        text = overlay.read_text().replace("save_last: true}", every_step)
        probes = (
            f"    - class_path: tests.cli.stream_probe.KillAt\n"
            f"    - class_path: tests.cli.stream_probe.KeyLog\n      init_args: {{path: {run_dir / 'keys.jsonl'}}}\n"
        )
        overlay.write_text(text.replace("  callbacks:\n", "  callbacks:\n" + probes))
        runs[name] = (run_dir, overlay)
    whole_dir, whole_overlay = runs["whole"]
    _fit(whole_dir, whole_overlay, workers)
    killed_dir, killed_overlay = runs["killed"]
    assert _fit(killed_dir, killed_overlay, workers, kill_at=KILL_AT) == -9
    before = _keys(killed_dir / "keys.jsonl")
    assert len(before) == KILL_AT  # killed as step KILL_AT began (its checkpoint: after step KILL_AT - 1)
    _fit(killed_dir, killed_overlay, workers, "--ckpt_path=last")
    after = _keys(killed_dir / "keys.jsonl")[KILL_AT:]
    whole = _keys(whole_dir / "keys.jsonl")
    assert len(whole) == STEPS
    assert before + after == whole
