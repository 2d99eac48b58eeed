"""The train/eval streams on webdataset's pipeline: encoded shuffling, tar cuts, exact replay."""

from __future__ import annotations

import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from datamodules.video import VideoDataModule
from lightning_viper.data.sample import Sample, SampleDecoder
from lightning_viper.data.stream import EvalStream, StreamPosition, TrainStream
from tests.data.fixtures import annotation, good_sample, grey_video, make_shards


class CountingDecoder:
    """A SampleDecoder that counts how many samples it decoded."""

    def __init__(self, image_size: int = 8) -> None:
        self.inner, self.calls = SampleDecoder(image_size=image_size), 0

    def __call__(self, raw: dict[str, Any]) -> Sample:
        self.calls += 1
        return self.inner(raw)


def test_train_shuffle_buffer_holds_encoded_samples(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, [[good_sample(f"s{j}_{i}", 1) for i in range(10)] for j in range(3)])
    decoder = CountingDecoder()
    stream = TrainStream([list(map(str, shards))], [1.0], decoder, epoch_samples=20, shuffle_buffer=50)
    first = next(iter(stream))
    assert isinstance(first, Sample)
    # the buffer filled with bytes; only the sample handed out was decoded
    assert decoder.calls == 1


def _member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


def test_tar_cut_inside_a_member_keeps_every_complete_sample(tmp_path: Path, caplog: Any) -> None:
    (path,) = make_shards(tmp_path, [[good_sample(f"s{i}", 2) for i in range(3)]])
    start, size = _member_offsets(path)["s2.mp4"]
    path.write_bytes(path.read_bytes()[: start + size // 2])  # cut inside s2's video
    (after,) = make_shards(tmp_path / "b", [[good_sample("after", 2)]])
    out = list(EvalStream([str(path), str(after)], SampleDecoder(image_size=8)))
    assert [s.key for s in out] == ["s0", "s1", "after"]
    assert [s.skipped for s in out] == [0, 0, 1]
    warning = next(r.getMessage() for r in caplog.records if "truncated" in r.getMessage())
    assert "after sample s1" in warning and "s2" not in warning.split("after sample")[0]


def test_tar_cut_between_members_is_counted(tmp_path: Path) -> None:
    (path,) = make_shards(tmp_path, [[good_sample(f"s{i}", 2) for i in range(3)]])
    start, _ = _member_offsets(path)["s2.mp4"]
    path.write_bytes(path.read_bytes()[: start - 512])  # just before s2's header: looks like a clean end
    (after,) = make_shards(tmp_path / "b", [[good_sample("after", 2)]])
    out = list(EvalStream([str(path), str(after)], SampleDecoder(image_size=8)))
    assert [s.key for s in out] == ["s0", "s1", "after"] and out[-1].skipped == 1


def _shards_with_a_bad_sample(tmp_path: Path) -> list[str]:
    bad = ("bad", {"mp4": grey_video(2)[:40], "json": annotation()})
    samples = [[good_sample(f"a{i}", 1) for i in range(5)] + [bad], [good_sample(f"b{i}", 1) for i in range(6)]]
    return list(map(str, make_shards(tmp_path, samples)))


@pytest.mark.parametrize("stop", [0, 3, 9])
def test_train_replay_continues_exactly_where_a_reader_stopped(tmp_path: Path, stop: int) -> None:
    urls = _shards_with_a_bad_sample(tmp_path)

    def stream() -> TrainStream:
        return TrainStream([urls], [1.0], SampleDecoder(image_size=8), epoch_samples=12, shuffle_buffer=5, seed=3)

    full = list(stream())
    assert len(full) == 12 and sum(s.skipped for s in full) >= 1
    resumed = stream()
    _, consumed, yielded = full[stop].meta["stream"]
    resumed.set_position(StreamPosition(epoch=0, readers={0: (consumed, yielded)}))
    decoder = CountingDecoder()
    resumed.decode = decoder
    rest = list(resumed)
    assert [s.key for s in rest] == [s.key for s in full[stop + 1 :]]
    assert decoder.calls == len(rest) + sum(s.skipped for s in rest)  # the replayed part was not decoded
    # another epoch is another order
    other = stream()
    other.set_position(StreamPosition(epoch=1))
    assert [s.key for s in other] != [s.key for s in full]


def test_image_size_mismatch_with_the_encoder_fails_at_setup(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    shards = make_shards(tmp_path, [[good_sample("s0", 1)]])
    dm = VideoDataModule(val=str(shards[0]), tokenizer=str(demo_tokenizer_dir), image_size=16)
    model = SimpleNamespace(encoder=SimpleNamespace(image_size=32))
    dm.trainer = SimpleNamespace(lightning_module=model, global_rank=0, world_size=1)  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"image_size=16 but .* 32x32 frames.*image_size to 32"):
        dm.setup("validate")


def test_state_dict_round_trip_restores_position_and_skips(tmp_path: Path, demo_tokenizer_dir: Path) -> None:
    urls = _shards_with_a_bad_sample(tmp_path)
    dm = VideoDataModule(train=urls, tokenizer=str(demo_tokenizer_dir), image_size=8, batch_size=2, epoch_length=12)
    dm.setup("fit")
    batches = [dm.on_before_batch_transfer(b, 0) for b in dm.train_dataloader()]
    dm2 = VideoDataModule(train=urls, tokenizer=str(demo_tokenizer_dir), image_size=8, batch_size=2, epoch_length=12)
    dm2.setup("fit")
    loader = iter(dm2.train_dataloader())
    for _ in range(2):
        dm2.on_before_batch_transfer(next(loader), 0)
    state = dm2.state_dict()
    assert state["epoch"] == 0 and len(state["readers"]) == 1
    dm3 = VideoDataModule(train=urls, tokenizer=str(demo_tokenizer_dir), image_size=8, batch_size=2, epoch_length=12)
    dm3.setup("fit")
    dm3.load_state_dict(state)
    assert dm3.skipped_total == dm2.skipped_total
    rest = [dm3.on_before_batch_transfer(b, 0) for b in dm3.train_dataloader()]
    keys = [m["key"] for b in batches for m in b.meta]
    assert [m["key"] for b in rest for m in b.meta] == keys[4:]
    assert dm3.skipped_total == dm.skipped_total
