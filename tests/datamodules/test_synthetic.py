from __future__ import annotations

from pathlib import Path

from datamodules.synthetic import SyntheticVideoDataModule


def test_generates_once_and_reads_back(tmp_path: Path) -> None:
    knobs = dict(cache_dir=str(tmp_path), num_train=16, num_val=8, num_test=8, num_frames=8, batch_size=4)
    dm = SyntheticVideoDataModule(**knobs)
    assert dm.tokenizer.convert_tokens_to_ids("<video>") != dm.tokenizer.unk_token_id  # before prepare_data
    dm.prepare_data()
    shards = sorted(tmp_path.glob("*/shard-*.tar"))
    assert {p.parent for p in shards} == set(dm.split_dirs.values()) and len(dm.split_dirs) == 3
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = SyntheticVideoDataModule(**knobs)
    again.prepare_data()
    assert again.split_dirs == dm.split_dirs
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("*/shard-*.tar"))] == stamps
    other_seed = SyntheticVideoDataModule(**{**knobs, "seed": 1}).split_dirs
    assert not set(other_seed.values()) & set(dm.split_dirs.values())

    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 4
    batch = train[0]
    assert batch.frames.shape == (32, 3, 32, 32) and batch.frames_per_sample.tolist() == [8] * 4
    assert all(m["task"] == "mcq" and m["answer"] in "ABCD" for m in batch.meta)
    val = [m["key"] for b in dm.val_dataloader() for m in b.meta]
    assert len(val) == len(set(val)) == 8
    dm.setup("test")
    test = [m["key"] for b in dm.test_dataloader() for m in b.meta]
    assert len(test) == 8 and not set(test) & set(val)


def test_every_generator_knob_reaches_the_synth_config(tmp_path: Path) -> None:
    """The datamodule passes its SynthConfig arguments through by name (no field is dropped)."""
    import inspect
    from dataclasses import fields

    from lightning_viper.data.synth import SynthConfig

    knobs = dict(num_frames=6, image_size=48, needle_frames=3, num_distractors=1, seed=5, shuffle_options=True)
    dm = SyntheticVideoDataModule(cache_dir=str(tmp_path), num_train=12, samples_per_shard=7, tasks=["count"], **knobs)
    expected = SynthConfig(num_samples=12, samples_per_shard=7, tasks=("count",), **knobs)
    assert dm.config == expected and dm.split_dirs["train"] == tmp_path / f"train-{expected.digest()}"
    taken = set(inspect.signature(SyntheticVideoDataModule.__init__).parameters)
    assert {f.name for f in fields(SynthConfig)} - taken == {"num_samples", "codec", "version"}  # set per split / fixed
    assert SyntheticVideoDataModule(cache_dir=str(tmp_path)).config.tasks == ("mcq",)


def test_a_split_is_never_read_at_its_cached_size(tmp_path: Path) -> None:
    """Changing num_test regenerates the test split only (it used to reuse the cached one, any size)."""
    knobs = dict(cache_dir=str(tmp_path), num_train=4, num_val=2, num_test=2, num_frames=4, batch_size=2)
    dm = SyntheticVideoDataModule(**knobs)
    dm.prepare_data()
    bigger = SyntheticVideoDataModule(**{**knobs, "num_test": 5})
    assert bigger.split_dirs["train"] == dm.split_dirs["train"] and bigger.split_dirs["val"] == dm.split_dirs["val"]
    assert bigger.split_dirs["test"] != dm.split_dirs["test"]
    bigger.setup("test")
    assert sum(len(b.meta) for b in bigger.test_dataloader()) == 5
