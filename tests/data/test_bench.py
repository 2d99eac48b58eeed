from __future__ import annotations

from lightning_viper.data.bench import bench_data


def test_bench_reports_the_same_frames_both_ways() -> None:
    result = bench_data(num_videos=4, num_frames=8, source_size=32, image_size=16, num_workers=0, repeats=1)
    assert result["videos"] == 4
    assert result["sampled_frames"] == result["raw_frames"] == 32
    for key in ("raw_pyav_fps", "decode_fps", "pipeline_fps", "ratio"):
        assert result[key] > 0
    assert result["machine"]["cpus"] >= 1
