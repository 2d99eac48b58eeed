from __future__ import annotations

from pathlib import Path

import numpy as np

from lightning_viper.data.bench import bench_data
from lightning_viper.data.bench_memory import bench_data_memory
from lightning_viper.data.shards import write_shard
from lightning_viper.data.video_io import encode_video
from tests.data.fixtures import annotation


def test_bench_reports_the_same_frames_both_ways() -> None:
    result = bench_data(num_videos=4, num_frames=8, source_size=32, image_size=16, num_workers=0, repeats=1)
    assert result["videos"] == 4
    assert result["sampled_frames"] == result["raw_frames"] == 32
    for key in ("raw_pyav_fps", "decode_fps", "pipeline_fps", "ratio"):
        assert result[key] > 0
    assert result["machine"]["cpus"] >= 1


def test_memory_bench_buffer_holds_encoded_bytes(tmp_path: Path) -> None:
    """A full buffer of 150 noisy videos costs about their encoded bytes, far below their frames."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        frames = rng.integers(0, 256, size=(16, 96, 96, 3), dtype=np.uint8)  # noise: ~incompressible
        samples.append((f"n{i}", {"mp4": encode_video(frames, bit_rate=4_000_000), "json": annotation()}))
    write_shard(tmp_path / "shard-000000.tar", samples)
    result = bench_data_memory(str(tmp_path / "shard-000000.tar"), image_size=96, shuffle_buffer=150, batches=2)
    assert result["frames_per_sample"] == 16
    assert result["buffer_estimate_gib"] > 0.01  # the measurement is above the allocator's noise
    assert 0.5 < result["buffer_gib"] / result["buffer_estimate_gib"] < 2.0
    assert result["decoded_buffer_gib"] > 2 * result["buffer_gib"]
