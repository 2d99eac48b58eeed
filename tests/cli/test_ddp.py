"""A two-process DDP fit of the demo on CPU (gloo): ranks read disjoint validation samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import write_overlay

ROOT = Path(__file__).resolve().parents[2]


def _ddp_fit(tmp_path: Path, overlay: Path, steps: int, *extra: str) -> None:
    ddp = [
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=null",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lightning_viper.cli.main", "fit", "--config", str(ROOT / "recipes/demo.yaml")]
    cmd += ["--config", str(overlay), *ddp, *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _train_keys(directory: Path, rank: int) -> list[str]:
    return json.loads((directory / "seen" / f"seen-train-rank{rank}.json").read_text())


@pytest.mark.multiproc
@pytest.mark.slow
def test_ddp_fit_of_the_demo_splits_data_across_ranks(tmp_path: Path, synth_cache: Path) -> None:
    overlay = write_overlay(tmp_path, synth_cache, batch_size=2)
    _ddp_fit(tmp_path, overlay, 3)
    seen = {
        r: {s: json.loads((tmp_path / "seen" / f"seen-{s}-rank{r}.json").read_text()) for s in ("train", "val")}
        for r in (0, 1)
    }
    val0, val1 = set(seen[0]["val"]), set(seen[1]["val"])
    assert val0 and val1
    assert not (val0 & val1), "validation samples must not be shared between ranks"
    assert len(val0 | val1) == 8, "together the ranks read the whole validation set"
    assert len(seen[0]["train"]) == len(seen[1]["train"]) == 3 * 2  # 3 steps x batch 2 per rank
    assert seen[0]["train"] != seen[1]["train"], "ranks draw different training streams"
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


@pytest.mark.multiproc
@pytest.mark.slow
def test_ddp_resume_continues_every_ranks_stream(tmp_path: Path, synth_cache: Path) -> None:
    """3 steps + resume to 6 steps == 6 steps at once, on each of two ranks (positions gathered)."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    for directory in (whole, split):
        directory.mkdir()
    _ddp_fit(whole, write_overlay(whole, synth_cache, batch_size=2), 6)
    overlay = write_overlay(split, synth_cache, batch_size=2)
    _ddp_fit(split, overlay, 3)
    first = [_train_keys(split, r) for r in (0, 1)]
    _ddp_fit(split, overlay, 6, "--ckpt_path=last")
    for rank in (0, 1):
        assert first[rank] + _train_keys(split, rank) == _train_keys(whole, rank)
