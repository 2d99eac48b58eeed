"""End to end: `viper pack` a VideoMME-style file, `lightning test` it (the model's answers fixed, so the
right ones are known), find the breakdowns in MLflow."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lightning_viper.cli.main import VideoCLI
from lightning_viper.data.pack import pack
from lightning_viper.module import VideoLM
from lightning_viper.text.bpe import train_tokenizer
from tests.data.fixtures import grey_video

ROOT = Path(__file__).resolve().parents[2]
GROUPS = [
    ("short", "Counting Problem"),
    ("short", "OCR Problems"),
    ("medium", "Counting Problem"),
    ("long", "OCR Problems"),
]


@pytest.mark.slow
def test_lightning_test_logs_grouped_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    media = tmp_path / "videos"
    media.mkdir()
    rows = []
    for i in range(8):
        (media / f"v{i}.mp4").write_bytes(grey_video(4, size=32))
        duration, task = GROUPS[i % 4]
        rows.append(
            {
                "videoID": f"v{i}",
                "question_id": f"{i:03d}-1",
                "duration": duration,
                "domain": "Knowledge",
                "sub_category": "Humanity",
                "task_type": task,
                "question": f"What is shown in clip {i}?",
                "options": ["A. red", "B. green", "C. blue", "D. yellow"],
                "answer": "ABCD"[i % 4],
            }
        )
    ann = tmp_path / "videomme.json"
    ann.write_text(json.dumps(rows))
    root = tmp_path / "shards"
    assert pack(str(ann), str(media), str(root / "val"), "videomme", workers=1)["num_written"] == 8
    train_tokenizer([str(ann)], str(root / "tokenizer"), vocab_size=512, min_frequency=1)
    monkeypatch.setenv("VIPER_SHARDS", str(root))
    monkeypatch.chdir(tmp_path)
    # the model always answers "A", so which samples are right is known by hand: clips 0 and 4
    # (answer A; groups short + Counting Problem); everything else is wrong
    monkeypatch.setattr(VideoLM, "generate", lambda self, batch: (["A"] * batch.batch_size, {}))
    # an absolute store: mlflow caches one store per URI string in the process, so the recipe's relative
    # sqlite:///mlflow.db would reach the database of an earlier in-process test's working directory
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    VideoCLI(args=["test", "--config", str(ROOT / "recipes/demo_shards.yaml"), "--data.init_args.num_workers=0",
                   f"--trainer.logger.init_args.tracking_uri={store}"])  # fmt: skip

    client = MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "demo-shards"]
    (run,) = client.search_runs([experiment.experiment_id])
    logged = run.data.metrics
    # the expected breakdowns, from the per-sample scores the PredictionWriter wrote
    scores = [
        json.loads(line) for line in (tmp_path / "runs/demo_shards/predictions-test.jsonl").read_text().splitlines()
    ]
    assert len(scores) == 8
    by: dict[str, list[float]] = defaultdict(list)
    for row in scores:
        duration, task = GROUPS[int(row["key"].split("-")[0]) % 4]
        assert (row["groups"]["duration"], row["groups"]["task"]) == (duration, task)  # the file slices too
        by[f"duration/{duration}"].append(row["score"])
        by[f"task/{task}"].append(row["score"])
        by["domain/Knowledge"].append(row["score"])
    expected = {f"test/mcq_acc/{k}": sum(v) / len(v) for k, v in by.items()}
    tasks = [expected[f"test/mcq_acc/task/{t}"] for t in ("Counting Problem", "OCR Problems")]
    expected["test/mcq_acc_macro_task"] = sum(tasks) / 2
    assert {k: v for k, v in logged.items() if k.startswith("test/mcq_acc")} == pytest.approx(
        expected | {"test/mcq_acc/sub_category/Humanity": expected["test/mcq_acc/domain/Knowledge"]}
    )
    assert logged["test/mcq/acc"] == pytest.approx(sum(r["score"] for r in scores) / 8) == pytest.approx(2 / 8)
    by_hand = {
        "duration/short": 2 / 4,  # clips 0, 1, 4, 5
        "duration/medium": 0 / 2,
        "duration/long": 0 / 2,
        "task/Counting Problem": 2 / 4,  # clips 0, 2, 4, 6
        "task/OCR Problems": 0 / 4,
        "domain/Knowledge": 2 / 8,
        "sub_category/Humanity": 2 / 8,
    }
    assert {k: v for k, v in logged.items() if k.startswith("test/mcq_acc")} == pytest.approx(
        {f"test/mcq_acc/{k}": v for k, v in by_hand.items()} | {"test/mcq_acc_macro_task": (2 / 4 + 0) / 2}
    )
