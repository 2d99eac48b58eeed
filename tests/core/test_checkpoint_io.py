"""Checkpoint files: no code runs on load (init_from), and a failed save never truncates the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_viper.backbones import tiny_hybrid
from lightning_viper.backbones.loading import CheckpointError
from lightning_viper.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError, load_checkpoint
from lightning_viper.encoders import SiglipEncoder
from lightning_viper.module import VideoLM
from lightning_viper.projectors import ToMeProjector
from tests.faults import fill_disk_under


class _Payload:
    """Unpickling this object calls ``Path.touch(marker)``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def _model(**kwargs: Any) -> VideoLM:
    torch.manual_seed(0)
    return VideoLM(
        SiglipEncoder(image_size=32, patch_size=8),
        ToMeProjector(tokens_per_frame=4, num_heads=2),
        tiny_hybrid(vocab_size=512),
        **kwargs,
    )


def test_init_from_refuses_a_checkpoint_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = _model().state_dict()
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"x": _Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="refusing to load it, because unpickling them can run code"):
        _model(init_from=str(path), init_parts=["projector"])
    assert not marker.exists(), "loading the checkpoint ran the payload's code"


def test_a_plain_checkpoint_still_initialises_parts(tmp_path: Path) -> None:
    first = _model()
    path = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": first.state_dict(), "hyper_parameters": {"lr": 1e-3, "betas": (0.9, 0.95)}}, path)
    torch.manual_seed(5)
    second = VideoLM(
        SiglipEncoder(image_size=32, patch_size=8),
        ToMeProjector(tokens_per_frame=4, num_heads=2),
        tiny_hybrid(vocab_size=512),
        init_from=str(path),
        init_parts=["projector"],
    )
    for a, b in zip(first.projector.state_dict().values(), second.projector.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
        load_checkpoint(tmp_path / "junk.ckpt")


def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpt" / "last.ckpt"
    good = {"state_dict": {"w": torch.zeros(4)}, "global_step": 2}
    io.save_checkpoint(good, target)
    fill_disk_under(tmp_path / "ckpt", monkeypatch)
    with pytest.raises(
        CheckpointWriteError, match=r"No space left on device.*previous file under that name is unchanged"
    ):
        io.save_checkpoint({"state_dict": {"w": torch.ones(100_000)}, "global_step": 4}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["global_step"] == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"], "the temporary file was removed"
