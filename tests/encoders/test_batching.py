"""map_frames: the one micro-batching loop over a video's frames."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.encoders import SiglipEncoder
from lightning_viper.encoders.batching import map_frames


def test_micro_batches_give_the_whole_video_result() -> None:
    frames = torch.randn(7, 3, 4, 4)
    calls: list[int] = []

    def fn(chunk: torch.Tensor) -> torch.Tensor:
        calls.append(chunk.shape[0])
        return chunk.flatten(1).sum(1, keepdim=True) * 2  # (f, 1)

    out = map_frames(fn, frames, 3)
    assert calls == [3, 3, 1]
    torch.testing.assert_close(out, frames.flatten(1).sum(1, keepdim=True) * 2)
    single = map_frames(fn, frames, 16)  # one micro-batch: fn's own output, no copy
    assert calls[-1] == 7 and single.shape == (7, 1)
    with pytest.raises(ValueError, match="micro_batch must be >= 1"):
        map_frames(fn, frames, 0)


def test_the_tower_gives_the_same_features_in_any_micro_batch() -> None:
    torch.manual_seed(0)
    tower = SiglipEncoder(image_size=32, patch_size=8, micro_batch=2)
    frames = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        small = tower(frames)
        tower.micro_batch = 5
        torch.testing.assert_close(small, tower(frames), rtol=1e-5, atol=1e-5)
    assert small.shape == (5, 16, 32)
    assert tower(frames[:0]).shape == (0, 16, 32)
