"""The `viper` console script wires the project's verbs to their typed functions."""

from __future__ import annotations

import json
import logging
import re
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


def help_of(capsys: pytest.CaptureFixture[str], *path: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def description(help_text: str) -> str:
    """The paragraph argparse prints between the usage and the first section (the verb's description)."""
    blocks = help_text.split("\n\n")
    first = blocks[1].strip() if len(blocks) > 1 else ""
    return "" if first.endswith(":") or first.startswith(("positional arguments:", "options:")) else first


MARKUP = ("``", ":func:`", ":class:`", ":mod:`", ":meth:`", ":attr:`")


def test_every_group_and_verb_has_plain_help(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_viper.cli.viper import verbs

    def walk(tree: dict, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [path]
        for name, item in tree.items():
            if name != "_help":
                found += walk(item, (*path, name)) if isinstance(item, dict) else [(*path, name)]
        return found

    paths = walk(verbs(), ())
    assert {("summary",), ("bench",), ("bench", "table"), ("bench", "prefill")} <= set(paths)
    for path in paths:
        text = help_of(capsys, *path)
        assert not [m for m in MARKUP if m in text], f"viper {' '.join(path)} --help prints markup:\n{text}"
        assert description(text), f"viper {' '.join(path)} --help has no description:\n{text}"
    top = help_of(capsys)
    assert "lightning fit|validate|test|predict" in description(top)


def test_plain_strips_literals_and_roles() -> None:
    from lightning_viper.cli.help import plain

    assert plain("see :func:`~lightning_viper.bench.prefill.bench_prefill` in ``out_dir``") == (
        "see bench_prefill in out_dir"
    )
    assert plain(":mod:`lightning_viper.compare.spec` and ``a\nb``") == "lightning_viper.compare.spec and a\nb"


def prefill_results(path: Path) -> Path:
    row = {
        "frames": 8, "strategy": "none", "status": "ok", "seq_len": 10, "seq_len_final": 10, "latency_ms": 100.0,
        "embed_ms": 60.0, "backbone_ms": 40.0, "peak_alloc_gib": 0.5, "tokens_per_s": 100.0,
        "flops": {"encoder": 1.0, "projector": 1.0, "backbone": 1.0, "total": 3.0},
    }  # fmt: skip
    path.write_text(json.dumps({"config": {"peak_flops": None}, "rows": [row]}))
    return path


def test_bench_table_prints_markdown_from_viper_and_the_module_door(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_viper.bench.__main__ import main as door

    results = prefill_results(tmp_path / "prefill.json")
    main(["bench", "table", str(results)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| strategy | frames |") and out[2].startswith("| none | 8 | 10 | 10 | 0.10 |")
    door(["table", str(results)])
    assert capsys.readouterr().out.splitlines() == out
    door(["table", json.dumps({"results": str(results)})])
    assert capsys.readouterr().out.splitlines() == out


def exits_with_message(caplog: pytest.LogCaptureFixture, args: list[str]) -> str:
    """Run ``viper ARGS``, which must exit 2 with one ERROR line (no traceback: SystemExit(2) from None)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="lightning_viper"), pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert exit_info.value.__cause__ is None and exit_info.value.__suppress_context__
    (record,) = caplog.records
    assert record.exc_info is None
    return record.getMessage()


def test_bench_table_says_what_is_wrong_with_its_input(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = exits_with_message(caplog, ["bench", "table", str(tmp_path / "missing.json")])
    assert missing.startswith("no results file")
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"device": "cpu", "rows": [{"checkpointing": True}]}))
    assert "not a viper bench prefill results file" in exits_with_message(caplog, ["bench", "table", str(train)])


def test_summary_of_a_missing_store_says_so_and_creates_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    message = exits_with_message(caplog, ["summary", "--tracking_uri", uri])
    assert message.startswith(f"no MLflow store at {tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_module_door_serves_viper_benchs_verbs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from lightning_viper.bench.__main__ import main as door
    from lightning_viper.bench.__main__ import parse
    from lightning_viper.cli.viper import bench_verbs, verbs

    group = verbs()["bench"]
    assert {k: v for k, v in group.items() if k in bench_verbs()} == bench_verbs()
    assert parse(["prefill", '{"frames": [2]}'], bench_verbs()) == ("prefill", {"frames": [2]})
    bad = [
        (lambda: parse(["data"], bench_verbs()), r"usage: python -m lightning_viper\.bench"),  # PyAV: viper only
        (lambda: parse(["train", "{frames: 2}"], bench_verbs()), "not JSON"),
        (lambda: door(["table", str(tmp_path / "missing.json")]), "no results file"),
        (lambda: door(["encoder", '{"framez": 2}']), "unexpected keyword argument 'framez'.*its arguments: frames"),
    ]
    for call, message in bad:  # bad input: one line on stderr, exit 2, no traceback
        with pytest.raises(SystemExit) as exit_info:
            call()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err, err


@pytest.mark.slow  # a fresh interpreter imports torch, transformers and Lightning
def test_the_module_door_needs_no_jsonargparse_or_pyav() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import lightning_viper.bench.__main__ as door; door.bench_verbs(); "
        "bad = sorted({'jsonargparse', 'av'} & set(sys.modules)); assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_summary_reads_the_latest_run_of_an_sqlite_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("demo")
    old = client.create_run(exp, run_name="older")
    client.log_metric(old.info.run_id, "test/mcq/acc", 0.25)
    new = client.create_run(exp, run_name="newer", start_time=old.info.start_time + 1000)
    client.log_metric(new.info.run_id, "test/mcq/acc", 0.875)
    client.log_metric(new.info.run_id, "train/loss", 1.5)
    main(["summary", "--experiment", "demo", "--tracking_uri", uri])
    out = capsys.readouterr().out
    assert "'newer'" in out and "test/mcq/acc" in out and "0.8750" in out
    assert "train/loss" not in out and f"mlflow ui --backend-store-uri {uri}" in out
    assert "status: RUNNING (no owner recorded" in out  # made by MlflowClient, not by the logger
    message = exits_with_message(caplog, ["summary", "--experiment", "other", "--tracking_uri", uri])
    assert re.match(r"no MLflow experiment named 'other'.*\['Default', 'demo'\]", message)


def test_summary_shows_another_hosts_running_run_as_not_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from lightning_viper.tracking.liveness import owner_tags

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    tags = {**owner_tags(), "viper.owner.host": "gpu-node-7", "viper.owner.pid": "4242"}
    run = client.create_run(client.create_experiment("demo"), tags=tags)
    main(["summary", "--experiment", "demo", "--tracking_uri", uri])
    assert "status: RUNNING (other host: pid 4242 on gpu-node-7, not verified)" in capsys.readouterr().out
    assert client.get_run(run.info.run_id).info.status == "RUNNING", "left alone"
