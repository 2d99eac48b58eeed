"""LayerProgress: a long run logs the layer it has reached, and leaves no hooks behind."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lightning_viper.backbones import tiny_hybrid
from lightning_viper.bench import bench_prefill
from lightning_viper.bench.progress import LayerProgress
from tests.backbones.conftest import layout_state


def test_logs_the_layer_reached_and_removes_its_hooks(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = tiny_hybrid(kernels="torch").eval()
    state = layout_state([[6]])
    hidden = model.embed(torch.randint(1, model.vocab_size, state.mask.shape))
    with caplog.at_level(logging.INFO, logger="lightning_viper.bench.progress"):
        with torch.no_grad(), LayerProgress(model, every_s=0.0, label="run") as progress:
            model(hidden, state)
        assert len(progress.handles) == 0
        lines = [r.getMessage() for r in caplog.records]
        n = model.num_layers
        assert [line.split(" after")[0] for line in lines] == [f"run: layer {i}/{n}" for i in range(n)]
        caplog.clear()
        with torch.no_grad():
            model(hidden, state)  # no hooks left: nothing logged
        assert caplog.records == []
        with torch.no_grad(), LayerProgress(model, every_s=3600.0, label="run"):
            model(hidden, state)
        assert caplog.records == []  # rate-limited: nothing within the hour


def test_prefill_bench_logs_progress_when_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lightning_viper.bench.progress"):
        res = bench_prefill(
            frames=[2], strategies=["none"], model="tiny", repeats=1, peer=False, progress_s=0.0,
            out_dir=str(tmp_path), plot=False,
        )  # fmt: skip
    assert res["config"]["progress_s"] == 0.0
    assert any(r.getMessage().startswith("2 frames: layer 0/") for r in caplog.records)
