"""recipes/demo_shards.yaml: the demo model on user shards (viper synth + viper tokenizer), as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_viper.cli.main import VideoCLI
from lightning_viper.data.synth import synth
from lightning_viper.text.bpe import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_shards_recipe_trains_on_user_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "shards"
    synth(str(root / "train"), num_samples=16, num_frames=8, samples_per_shard=8)
    synth(str(root / "val"), num_samples=8, num_frames=8, seed=1)
    summary = train_tokenizer([str(root / "train")], str(root / "tokenizer"), vocab_size=512)
    assert summary["unk_rate"] == 0.0
    monkeypatch.setenv("VIPER_SHARDS", str(root))
    monkeypatch.chdir(tmp_path)
    short = ["--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1"]
    cli = VideoCLI(
        args=["fit", "--config", str(ROOT / "recipes/demo_shards.yaml"), *short, "--data.init_args.num_workers=0"]
    )
    assert cli.trainer.global_step == 3
    assert cli.datamodule.image_size == 32 and cli.datamodule.batch_size == 8
    assert (tmp_path / "checkpoints" / "demo_shards" / "last.ckpt").is_file()
