"""bench_decode's eager and graph rows (on the CPU, graph rows decode eagerly over static caches)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_viper.bench.decode import bench_decode


def test_decode_rows_per_family_and_mode(tmp_path: Path) -> None:
    res = bench_decode(
        input_tokens=30, new_tokens=4, size="tiny", repeats=1, graphs=[False, True], out_dir=str(tmp_path), tag="g"
    )
    assert [(r["family"], r["graphs"]) for r in res["rows"]] == [
        ("hybrid", False), ("hybrid", True), ("qwen2", False), ("qwen2", True)
    ]  # fmt: skip
    assert all(r["status"] == "ok" and not r["graphs_captured"] for r in res["rows"])  # no CUDA here
    assert res["config"]["graphs"] == [False, True]
    rate = {(r["family"], r["graphs"]): r["decode_tokens_per_s"] for r in res["rows"]}
    assert res["hybrid_over_qwen2_graphs"] == rate[("hybrid", True)] / rate[("qwen2", True)]
    assert res["hybrid_over_qwen2"] == rate[("hybrid", False)] / rate[("qwen2", False)]
    assert json.loads((tmp_path / "g.json").read_text())["rows"][1]["graphs"] is True
