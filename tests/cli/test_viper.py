"""The `viper` console script wires the project's verbs to their typed functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_viper.cli.viper import main


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in ("synth", "pack", "compare", "bench"):
        assert verb in out


def test_synth_writes_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["synth", str(tmp_path / "synth"), "--num_samples=4", "--num_frames=4", "--samples_per_shard=2"])
    assert len(list((tmp_path / "synth").rglob("*.tar"))) == 2
    assert capsys.readouterr().out.strip().startswith("{")


def test_bench_prefill_runs_tiny_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "bench",
            "prefill",
            "--model=tiny",
            "--frames=[2, 4]",
            "--strategies=[none, transv]",
            "--repeats=1",
            "--peer=false",
            "--dtype=float32",
            f"--out_dir={tmp_path}",
            "--plot=false",
        ]
    )
    (result,) = list(tmp_path.glob("*.json"))
    rows = json.loads(result.read_text())["rows"]
    assert {(r["strategy"], r["frames"]) for r in rows} == {("none", 2), ("none", 4), ("transv", 2), ("transv", 4)}


def test_bad_argument_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "out", "--num_sampels=4"])
    assert "num_sampels" in capsys.readouterr().err
