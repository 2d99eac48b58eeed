"""TaskMetrics synced over two real processes (gloo) equals one process that saw every sample."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_viper.metrics import TaskMetrics

OPTIONS = ["red", "green", "blue"]
# rank 0 gets the captions and an mcq sample; rank 1 only grounding and mcq (its caption states stay
# empty); the mcq groups' accuracy is split over both ranks
RANK_SAMPLES: list[list[tuple[str, dict]]] = [
    [
        ("B", {"task": "mcq", "options": OPTIONS, "answer_index": 1, "groups": {"duration": "short"}}),
        ("a cat cat", {"task": "caption", "answer": "a cat"}),
        ("a cat", {"task": "caption", "answer": "a dog"}),
    ],
    [
        ("banana", {"task": "mcq", "options": OPTIONS, "answer_index": 0, "groups": {"duration": "long", "task": "x"}}),
        ("A", {"task": "mcq", "options": OPTIONS, "answer_index": 0, "groups": {"duration": "short", "task": "x"}}),
        ("from 0 to 10 seconds", {"task": "grounding", "span": [5.0, 15.0]}),
    ],
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    metrics = TaskMetrics()
    preds, meta = zip(*RANK_SAMPLES[rank], strict=True)
    metrics.update(list(preds), list(meta))
    out = {k: v.item() for k, v in metrics.compute().items()}
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.multiproc
def test_two_process_sync_matches_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    single = TaskMetrics()
    for samples in RANK_SAMPLES:
        preds, meta = zip(*samples, strict=True)
        single.update(list(preds), list(meta))
    expected = {k: v.item() for k, v in single.compute().items()}
    assert expected["mcq_acc/duration/short"] == 1.0 and expected["mcq_acc/task/x"] == 0.5
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-6), (rank, key)
