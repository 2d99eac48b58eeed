"""Markdown prefill tables from results JSON: MFU columns recomputed by hand."""

from lightning_viper.bench.table import PREFILL_HEADER, prefill_table


def test_prefill_table_rows_and_mfu() -> None:
    ok = {
        "frames": 64,
        "strategy": "none",
        "status": "ok",
        "seq_len": 1058,
        "seq_len_final": 136,
        "latency_ms": 2000.0,
        "embed_ms": 1500.0,
        "backbone_ms": 500.0,
        "peak_alloc_gib": 21.04,
        "tokens_per_s": 529.0,
        "flops": {"encoder": 290.0, "projector": 10.0, "backbone": 45.0, "compression": 5.0, "total": 350.0},
    }
    results = {"config": {"peak_flops": 1000.0}, "rows": [ok, {"frames": 128, "strategy": "none", "status": "oom"}]}
    lines = prefill_table(results).splitlines()
    assert lines[0] == PREFILL_HEADER and lines[1].count("---") == 12
    # MFU = 350 / 2 s / 1000 = 17.5 %; encoder (290 + 10) / 1.5 s = 20 %; LLM (45 + 5) / 0.5 s = 10 %
    assert lines[2] == "| none | 64 | 1058 | 136 | 2.00 | 1.50 | 0.50 | 21.0 | 529 | 17.5 | 20.0 | 10.0 |"
    assert lines[3].startswith("| none | 128 |  |  | oom |") and lines[3].count("|") == 13


def test_without_a_peak_the_mfu_cells_stay_empty() -> None:
    row = {
        "frames": 8,
        "strategy": "transv",
        "status": "ok",
        "seq_len": 10,
        "seq_len_final": 5,
        "latency_ms": 10.0,
        "embed_ms": 5.0,
        "backbone_ms": 5.0,
        "peak_alloc_gib": 0.5,
        "tokens_per_s": 1000.0,
        "flops": {"encoder": 1.0, "projector": 1.0, "backbone": 1.0, "total": 3.0},
    }
    line = prefill_table({"config": {"peak_flops": None}, "rows": [row]}).splitlines()[2]
    assert line.endswith("| 1000 |  |  |  |")
