from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightning_viper.data.decode import decode_video
from lightning_viper.data.stream import SkipCounter, shard_samples
from lightning_viper.data.synth import FLASH_COLOUR, STAR_COLOURS, SynthConfig, synth


def read_back(paths: list[str]) -> list[tuple[dict, np.ndarray]]:
    out = []
    for p in paths:
        for raw in shard_samples(p, SkipCounter()):
            video = decode_video(raw["mp4"], image_size=32, fps=1.0)
            out.append((json.loads(raw["json"]), video.frames.permute(0, 2, 3, 1).numpy().astype(int)))
    return out


def saturated(frame: np.ndarray) -> np.ndarray:
    """(S, S) bool: pixels far from grey."""
    return (frame.max(-1) - frame.min(-1)) > 80


def test_same_seed_same_bytes_and_labels(tmp_path: Path) -> None:
    a = synth(str(tmp_path / "a"), num_samples=12, num_frames=16, tasks=["mcq", "grounding", "count"], seed=3)
    b = synth(str(tmp_path / "b"), num_samples=12, num_frames=16, tasks=["mcq", "grounding", "count"], seed=3)
    c = synth(str(tmp_path / "c"), num_samples=12, num_frames=16, tasks=["mcq", "grounding", "count"], seed=4)
    assert [Path(p).read_bytes() for p in a["shards"]] == [Path(p).read_bytes() for p in b["shards"]]
    assert [Path(p).read_bytes() for p in a["shards"]] != [Path(p).read_bytes() for p in c["shards"]]
    assert a["num_samples"] == 12 and a["bytes"] > 0


def test_mcq_star_has_the_answer_colour_only_inside_its_span(tmp_path: Path) -> None:
    summary = synth(str(tmp_path), num_samples=16, num_frames=16, needle_frames=3, seed=0)
    answers = []
    for ann, frames in read_back(summary["shards"]):
        start, end = (int(v) for v in ann["span"])
        colour = np.array(STAR_COLOURS[ann["options"][ann["answer_index"]].split(". ")[1]])
        assert ann["answer"] == "ABCD"[ann["answer_index"]]
        for f, frame in enumerate(frames):
            mask = saturated(frame)
            if start <= f < end:
                assert mask.sum() > 0.15 * mask.size  # a big star
                assert np.abs(frame[mask].mean(0) - colour).max() < 40
            else:
                assert mask.sum() == 0  # distractors are grey
        answers.append(ann["answer"])
    assert len(set(answers)) == 4  # all options occur


def test_grounding_span_and_count_flashes(tmp_path: Path) -> None:
    summary = synth(str(tmp_path), num_samples=10, num_frames=16, tasks=["grounding", "count"], seed=1)
    for ann, frames in read_back(summary["shards"]):
        shown = [f for f, frame in enumerate(frames) if saturated(frame).sum() > 20]
        if ann["task"] == "grounding":
            start, end = (int(v) for v in ann["span"])
            assert shown == list(range(start, end))
            assert ann["answer"] == f"from {start} to {end} seconds"
        else:
            assert len(shown) == int(ann["answer"]) == len(ann["flashes"])
            for f in shown:
                assert np.abs(frames[f][saturated(frames[f])].mean(0) - np.array(FLASH_COLOUR)).max() < 40


def test_long_video_and_config_checks(tmp_path: Path) -> None:
    summary = synth(str(tmp_path), num_samples=1, num_frames=600, image_size=16, seed=0)
    ((ann, frames),) = [(a, f) for a, f in read_back(summary["shards"])]
    assert frames.shape[0] == 600 and ann["duration"] == 600.0
    with pytest.raises(ValueError, match="unknown synthetic task"):
        SynthConfig(tasks=("dance",))
    assert SynthConfig(seed=1).digest() != SynthConfig(seed=2).digest()
