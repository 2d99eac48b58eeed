from __future__ import annotations

from pathlib import Path

from lightning_viper.data.bench import bench_data
from lightning_viper.data.bench_memory import bench_data_memory
from lightning_viper.data.shards import write_shard
from tests.data.fixtures import annotation, grey_video


def test_bench_reports_the_same_frames_both_ways() -> None:
    result = bench_data(num_videos=4, num_frames=8, source_size=32, image_size=16, num_workers=0, repeats=1)
    assert result["videos"] == 4
    assert result["sampled_frames"] == result["raw_frames"] == 32
    for key in ("raw_pyav_fps", "decode_fps", "pipeline_fps", "ratio"):
        assert result[key] > 0
    assert result["machine"]["cpus"] >= 1


def test_memory_bench_buffer_holds_encoded_bytes(tmp_path: Path) -> None:
    """A full buffer of 200 well-compressed 192 px videos costs far less than their decoded frames
    (~350 MB): the buffer holds bytes. (A buffer of decoded frames would exceed that.)"""
    samples = [(f"g{i}", {"mp4": grey_video(16, size=192), "json": annotation()}) for i in range(4)]
    write_shard(tmp_path / "shard-000000.tar", samples)
    result = bench_data_memory(str(tmp_path / "shard-000000.tar"), image_size=192, shuffle_buffer=200, batches=2)
    assert result["frames_per_sample"] == 16
    assert result["decoded_buffer_gib"] > 0.3
    assert result["buffer_gib"] < 0.25 * result["decoded_buffer_gib"], result
    assert result["buffer_estimate_gib"] < 0.05 * result["decoded_buffer_gib"]
