from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from datamodules.video import VideoDataModule
from tests.data.fixtures import good_sample, make_shards


def _worker(rank: int, world: int, root: str, tokenizer: str, pattern: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=rank, world_size=world)
    try:
        dm = VideoDataModule(val=pattern, tokenizer=tokenizer, image_size=8, batch_size=2, num_workers=1)
        dm.setup("validate")
        batches = list(dm.val_dataloader())
        keys = [m["key"] for b in batches for m in b.meta if not m["padding"]]
        Path(root, f"keys{rank}.json").write_text(json.dumps({"keys": keys, "batches": len(batches)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.multiproc
@pytest.mark.parametrize("num_shards", [1, 3])
def test_val_is_disjoint_across_two_gloo_ranks(tmp_path: Path, demo_tokenizer_dir: Path, num_shards: int) -> None:
    shards = make_shards(tmp_path, [[good_sample(f"s{j}_{i}", 1, size=8) for i in range(5)] for j in range(num_shards)])
    pattern = str(tmp_path / "shard-*.tar")
    mp.spawn(_worker, args=(2, str(tmp_path), str(demo_tokenizer_dir), pattern), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"keys{r}.json").read_text()) for r in range(2)]
    per_rank = [r["keys"] for r in results]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(f"s{j}_{i}" for j in range(len(shards)) for i in range(5))
    assert results[0]["batches"] == results[1]["batches"]  # padded: equal batch counts for FSDP
