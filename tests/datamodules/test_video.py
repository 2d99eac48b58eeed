from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch.distributed as dist
from torch.utils.data import DataLoader

from datamodules.video import VideoDataModule
from lightning_viper.batch import VideoBatch
from lightning_viper.data.sample import SampleDecoder
from lightning_viper.data.stream import EvalStream, TrainStream, rank_and_world
from tests.data.fixtures import annotation, good_sample, grey_video, make_shards


def keys_of(stream) -> list[str]:
    return [s.key for s in stream]


@pytest.fixture
def four_shards(tmp_path: Path) -> list[Path]:
    return make_shards(tmp_path, [[good_sample(f"s{j}_{i}", 2) for i in range(3)] for j in range(4)])


def test_bad_inputs_are_skipped_and_counted(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    video = grey_video(3)
    samples = [
        good_sample("good0", 3),
        ("corrupt", {"mp4": video[: len(video) // 3], "json": annotation()}),
        ("nojson", {"mp4": video}),
        ("badjson", {"mp4": video, "json": b"{oops"}),
        ("badindex", {"mp4": video, "json": annotation(answer_index=9, answer="J")}),
        ("nomedia", {"json": annotation(), "pyd": b"\x80\x04K\x01."}),
        good_sample("good1", 3),
    ]
    make_shards(tmp_path, [samples, [good_sample(f"late{i}", 3) for i in range(3)], [good_sample("final", 3)]])
    truncated = tmp_path / "shard-000001.tar"
    truncated.write_bytes(truncated.read_bytes()[:3000])  # cut inside the second sample's video
    dm = VideoDataModule(
        val=str(tmp_path / "shard-{000000..000002}.tar"), tokenizer=str(demo_tokenizer_dir), image_size=16, batch_size=2
    )
    dm.setup("validate")
    batches: list[VideoBatch] = [dm.on_before_batch_transfer(b, 0) for b in dm.val_dataloader()]
    assert [m["key"] for b in batches for m in b.meta] == ["good0", "good1", "late0", "final"]
    # the 5 bad samples of shard 0 ride on good1; the truncated shard 1 counts once, on "final"
    assert [b.skipped for b in batches] == [5, 1]
    assert dm.skipped_total == 6


def test_truncated_tar_is_one_counted_skip(tmp_path: Path) -> None:
    (path,) = make_shards(tmp_path, [[good_sample(f"s{i}", 2) for i in range(4)]])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    second = make_shards(tmp_path / "b", [[good_sample("after", 2)]])
    out = list(EvalStream([str(path), *map(str, second)], SampleDecoder(image_size=16)))
    assert out[-1].key == "after" and out[-1].skipped == 1
    assert all(s.skipped == 0 for s in out[:-1])


def test_pattern_matching_nothing_fails_at_setup(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    pattern = str(tmp_path / "missing-{000..003}.tar")
    dm = VideoDataModule(test=pattern, tokenizer=str(demo_tokenizer_dir))
    with pytest.raises(FileNotFoundError, match="missing-"):
        dm.setup("test")
    with pytest.raises(FileNotFoundError, match="nothing"):
        VideoDataModule(train=str(tmp_path / "nothing*.tar"), tokenizer=str(demo_tokenizer_dir)).setup("fit")


@pytest.mark.parametrize("num_shards", [1, 4])
@pytest.mark.parametrize("world", [2, 3])
def test_eval_split_is_disjoint_and_complete_across_ranks(tmp_path: Path, num_shards: int, world: int) -> None:
    shards = make_shards(tmp_path, [[good_sample(f"s{j}_{i}", 1) for i in range(5)] for j in range(num_shards)])
    decoder = SampleDecoder(image_size=8)
    per_rank = [keys_of(EvalStream(list(map(str, shards)), decoder, rank=r, world_size=world)) for r in range(world)]
    everything = keys_of(EvalStream(list(map(str, shards)), decoder, rank=0, world_size=1))
    assert sorted(itertools.chain(*per_rank)) == sorted(everything)
    assert len(set(itertools.chain(*per_rank))) == len(everything) == 5 * num_shards
    assert per_rank == [keys_of(EvalStream(list(map(str, shards)), decoder, r, world)) for r in range(world)]


def test_eval_split_across_dataloader_workers(four_shards: list[Path]) -> None:
    stream = EvalStream(list(map(str, four_shards)), SampleDecoder(image_size=8), rank=0, world_size=1)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    keys = [s.key for s in loader]
    assert sorted(keys) == sorted(f"s{j}_{i}" for j in range(4) for i in range(3))


def test_rank_from_torch_distributed(tmp_path: Path, four_shards: list[Path]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert rank_and_world() == (0, 1)
        assert len(keys_of(EvalStream(list(map(str, four_shards)), SampleDecoder(image_size=8)))) == 12
    finally:
        dist.destroy_process_group()


def test_train_mixture_weights_epoch_length_and_determinism(tmp_path: Path) -> None:
    a = make_shards(tmp_path / "a", [[good_sample(f"a{j}_{i}", 1) for i in range(4)] for j in range(2)])
    b = make_shards(tmp_path / "b", [[good_sample(f"b{j}_{i}", 1) for i in range(4)] for j in range(2)])
    decoder = SampleDecoder(image_size=8)

    def run(seed: int, rank: int = 0) -> list[str]:
        sources = [list(map(str, a)), list(map(str, b))]
        return keys_of(
            TrainStream(sources, [0.8, 0.2], decoder, 200, shuffle_buffer=4, seed=seed, rank=rank, world_size=2)
        )

    first = run(0)
    assert len(first) == 100  # 200 samples over 2 ranks
    assert first == run(0)
    assert first != run(1) and first != run(0, rank=1)
    share_a = sum(k.startswith("a") for k in first) / len(first)
    assert 0.65 < share_a < 0.95


def test_train_mixture_from_yaml_style_dicts(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    a = make_shards(tmp_path / "a", [[good_sample(f"a{i}", 2) for i in range(3)]])
    b = make_shards(tmp_path / "b", [[good_sample(f"b{i}", 2, task="count") for i in range(3)]])
    dm = VideoDataModule(
        train=[{"shards": str(a[0]), "weight": 1.0}, {"shards": [str(b[0])], "weight": 1.0}],
        tokenizer=str(demo_tokenizer_dir),
        image_size=8,
        batch_size=4,
        epoch_length=8,
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [b.batch_size for b in batches] == [4, 4]
    assert all(b.frames.shape == (8, 3, 8, 8) for b in batches)
    assert dm.tokenizer.convert_tokens_to_ids("<video>") in batches[0].input_ids[0].tolist()


@pytest.mark.parametrize("num_shards", [1, 3, 5])
def test_padded_eval_gives_every_reader_the_same_count(tmp_path: Path, num_shards: int) -> None:
    sizes = [3, 1, 4, 2, 5][:num_shards]
    shards = make_shards(tmp_path, [[good_sample(f"s{j}_{i}", 1) for i in range(n)] for j, n in enumerate(sizes)])
    # one corrupt sample in shard 0: its reader pads once more
    samples0 = [good_sample(f"s0_{i}", 1) for i in range(sizes[0] - 1)] + [("s0_bad", {"mp4": b"x", "json": b"{}"})]
    make_shards(tmp_path, [samples0])
    decoder = SampleDecoder(image_size=8)
    per_rank = [list(EvalStream(list(map(str, shards)), decoder, r, 3, pad=True)) for r in range(3)]
    assert len({len(samples) for samples in per_rank}) == 1
    real = [s.key for samples in per_rank for s in samples if not s.meta["padding"]]
    assert sorted(real) == sorted({f"s{j}_{i}" for j, n in enumerate(sizes) for i in range(n)} - {f"s0_{sizes[0] - 1}"})
