"""Report rendering from synthetic run records: the table's cells are checked one by one."""

from pathlib import Path

import pytest

from lightning_viper.compare import RunRecord, load_spec, write_report
from lightning_viper.compare.report import aggregate, render_html, table


def _record(variant: str, seed: int, frames: str, acc: float, tokens_in: float, tokens_final: float, **extra: float):
    metrics = {
        "test/mcq/acc": acc,
        "test/eff/vision_tokens": tokens_in,
        "test/eff/vision_tokens_final": tokens_final,
        "test/eff/prefill_ms": extra.get("prefill", 10.0),
        "test/eff/peak_mem_mb": extra.get("mem", 100.0),
    }
    params = {"model/params_compression": str(extra.get("params", 0))}
    return RunRecord(variant, seed, frames, f"{variant}{seed}{frames}", metrics, params, strategy=f"desc-{variant}")


RECORDS = [
    _record("none", 0, "8", 0.50, 512, 512, prefill=40.0, mem=300.0),
    _record("none", 1, "8", 0.70, 512, 512, prefill=44.0, mem=310.0),
    _record("transv", 0, "8", 0.60, 32, 16, prefill=8.0, mem=120.0, params=12345),
    _record("none", 0, "16", 0.40, 1024, 1024, prefill=80.0, mem=500.0),
    _record("transv", 0, "16", 0.45, 64, 32, prefill=15.0, mem=150.0, params=12345),
]


def test_aggregate_and_table_cells() -> None:
    rows = aggregate(RECORDS, order=["transv", "none"])
    assert [(r.variant, r.frames, r.seeds) for r in rows] == [
        ("transv", "8", [0]), ("transv", "16", [0]), ("none", "8", [0, 1]), ("none", "16", [0]),
    ]  # fmt: skip
    header, body = table(rows)
    assert header == [
        "strategy", "frames", "seeds", "MCQ acc", "vision tokens in", "vision tokens at last layer",
        "kept (fraction)", "prefill ms/sample", "peak memory MB", "params added",
    ]  # fmt: skip
    # transv at 8 frames: kept = 16 / 512 (the most tokens entering at 8 frames) = 0.03125
    assert body[0] == ["transv", "8", "1", "0.600", "32.0", "16.0", "0.031", "8.0", "120", "12,345"]
    # none at 8 frames over seeds 0 and 1: acc mean 0.6, sample std sqrt(0.02) = 0.141; prefill 42 ± 2.8
    assert body[2] == ["none", "8", "2", "0.600 ± 0.141", "512.0", "512.0", "1.000", "42.0 ± 2.8", "305 ± 7", "0"]
    # transv at 16 frames: kept = 32 / 1024
    assert body[1][6] == "0.031" and body[3][6] == "1.000"


def test_missing_values_show_a_dash_and_unseen_scores_no_column() -> None:
    rec = RunRecord("only", 0, "recipe", "r", {"test/grounding/miou": 0.25}, {})
    header, body = table(aggregate([rec]))
    assert "MCQ acc" not in header and "frames" not in header
    assert body == [["only", "1", "0.250", "–", "–", "–", "–", "–", "–"]]


def test_write_report_files(spec_file: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_file)
    out = tmp_path / "report"
    out.mkdir()
    files = write_report(spec, RECORDS, out)
    names = sorted(f.name for f in files)
    assert names == ["memory_vs_frames.png", "prefill_vs_frames.png", "report.html", "report.md", "score_vs_tokens.png"]
    md = (out / "report.md").read_text()
    assert "| none | 8 | 2 | 0.600 ± 0.141 |" in md
    assert "![score_vs_tokens](score_vs_tokens.png)" in md
    assert "- `transv`: desc-transv" in md
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_frame_count_has_no_frame_plots(spec_file: Path, tmp_path: Path) -> None:
    files = write_report(load_spec(spec_file), [r for r in RECORDS if r.frames == "8"], tmp_path)
    assert sorted(f.name for f in files) == ["report.html", "report.md", "score_vs_tokens.png"]


def test_html_escapes_text() -> None:
    rec = RunRecord("a<b", 0, "recipe", "r", {"test/mcq/acc": 1.0}, {})
    page = render_html("t & u", aggregate([rec]), [], ["note <i>"])
    assert "<td>a&lt;b</td>" in page and "t &amp; u" in page and "note &lt;i&gt;" in page


@pytest.mark.parametrize("n", [1, 3])
def test_kept_is_relative_to_the_largest_input_at_same_frames(n: int) -> None:
    recs = [_record(f"v{i}", 0, "8", 0.5, 100 * (i + 1), 10.0) for i in range(n)]
    rows = aggregate(recs)
    assert all(r.values["kept"][0] == pytest.approx(10.0 / (100 * n)) for r in rows)
