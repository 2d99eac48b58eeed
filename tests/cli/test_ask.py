"""``viper ask``: an answer about a real mp4 from a trained checkpoint, with its frames, tokens and
times; exit 2 with a message for a missing checkpoint or an unreadable video."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lightning_viper.cli.viper import main
from lightning_viper.inference import load_inference
from tests.eval.videos import write_videos
from tests.fixtures_demo import Tiny

DROP = [{"class_path": "lightning_viper.compression.TokenDrop", "init_args": {"layer": 1, "keep": 0.25}}]


@pytest.fixture
def video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(tmp_path)  # the demo recipe's relative paths (its tokenizer cache) land here
    return write_videos(tmp_path / "videos", 1)[0]


def _ask(tiny: Tiny, *args: str) -> list[str]:
    return ["ask", "--config", str(tiny.recipe), "--ckpt_path", str(tiny.checkpoint), *args]


@pytest.mark.slow
def test_ask_prints_the_answer_frames_tokens_and_times(
    tiny: Tiny, video: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    main(_ask(tiny, video["video"], video["question"], "--compression", json.dumps(DROP)))
    lines = capsys.readouterr().out.splitlines()
    fields = dict(line.split(": ", 1) for line in lines if not line.startswith("  "))
    inference = load_inference(tiny.recipe, str(tiny.checkpoint), compression=DROP)
    expected = inference.ask(video["video"], video["question"])
    assert fields["answer"] == expected.text
    assert fields["frames"] == "8"  # 8 s at 1 fps
    assert fields["vision tokens"] == "32 -> 8 after compression"  # 4 ToMe tokens per frame, 1/4 kept
    assert "  stage at layer 1: 32 -> 8 vision tokens" in lines
    for name in ("decode", "prefill", "total"):
        assert fields[name].endswith(" ms") and float(fields[name].removesuffix(" ms")) > 0
    assert float(fields["prefill"][:-3]) <= float(fields["total"][:-3])


@pytest.mark.slow
def test_ask_exits_2_with_a_message_for_bad_inputs(
    tiny: Tiny, video: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    missing = ["ask", "--config", str(tiny.recipe), "--ckpt_path", str(tmp_path / "gone.ckpt")]
    with pytest.raises(SystemExit) as exit_info:
        main([*missing, video["video"], video["question"]])
    assert exit_info.value.code == 2
    assert "does not exist: pass a .ckpt file written by `lightning fit`" in caplog.text

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SystemExit) as exit_info:
        main(_ask(tiny, str(broken), video["question"]))
    assert exit_info.value.code == 2
    assert "cannot read video" in caplog.text and "Pass a playable video file" in caplog.text
