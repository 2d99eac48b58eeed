"""The synthetic long-video task of the demo, generated on first use and read as WebDataset shards."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from datamodules.video import VideoDataModule
from lightning_viper.data.synth import SynthConfig, generate_shards
from lightning_viper.text.templates import PromptTemplate
from lightning_viper.text.tokenizer import build_demo_tokenizer

log = logging.getLogger(__name__)

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "lightning_viper", "synthetic")
SYNTH_KNOBS = {f.name for f in fields(SynthConfig)}  # arguments passed through to the generator by name


class SyntheticVideoDataModule(VideoDataModule):
    """Synthetic needle / grounding / counting videos (see :mod:`lightning_viper.data.synth`).

    ``prepare_data`` renders each split's shards into ``cache_dir/<split>-<hash of its knobs>/``
    (size and seed included) and the demo tokenizer once; later runs with the same knobs reuse
    them. Val and test use different seeds from train. Everything else is the normal :class:`VideoDataModule` path.

    Args:
        cache_dir: where generated data lives.
        num_train, num_val, num_test: videos per split.
        num_frames: frames (= seconds at 1 fps) per video.
        image_size: frame side in pixels (and the size frames are decoded to).
        needle_frames: consecutive frames that show the needle.
        num_distractors: grey shapes per video.
        tasks: subset of ["mcq", "grounding", "count"].
        seed: data seed (train uses it, val seed + 1, test seed + 2).
        shuffle_options: shuffle option colours per sample (harder than a fixed order).
        samples_per_shard: samples per tar shard.
        template, fps, max_frames, batch_size, num_workers, shuffle_buffer, epoch_length:
            as in :class:`VideoDataModule`; ``epoch_length`` defaults to ``num_train``.
    """

    def __init__(
        self,
        cache_dir: str = DEFAULT_CACHE,
        num_train: int = 1024,
        num_val: int = 128,
        num_test: int = 128,
        num_frames: int = 16,
        image_size: int = 32,
        needle_frames: int = 2,
        num_distractors: int = 3,
        tasks: list[str] | None = None,
        seed: int = 0,
        shuffle_options: bool = False,
        samples_per_shard: int = 128,
        template: PromptTemplate | None = None,
        fps: float = 1.0,
        max_frames: int | None = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        shuffle_buffer: int = 256,
        epoch_length: int | None = None,
    ) -> None:
        knobs = {name: value for name, value in locals().items() if name in SYNTH_KNOBS}  # the generator's, by name
        self.config = SynthConfig(**{**knobs, "num_samples": num_train, "tasks": tuple(tasks or ("mcq",))})
        self.split_sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.cache_dir = Path(cache_dir).expanduser()
        # each split is keyed by its own generator config (size and seed included): changing
        # num_test regenerates the test split only, and a cached split is never read at another size
        self.split_dirs = {
            split: self.cache_dir / f"{split}-{self.split_config(split).digest()}"
            for split, size in self.split_sizes.items()
            if size > 0
        }
        shards = {split: str(path / "shard-*.tar") for split, path in self.split_dirs.items()}
        super().__init__(
            train=shards.get("train"),
            val=shards.get("val"),
            test=shards.get("test"),
            tokenizer=str(self.cache_dir / "tokenizer-demo-v1"),
            template=template,
            image_size=image_size,
            fps=fps,
            max_frames=max_frames,
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle_buffer=shuffle_buffer,
            epoch_length=epoch_length or num_train,
            seed=seed,
        )

    def split_config(self, split: str) -> SynthConfig:
        """Generator config of one split (its own size and seed)."""
        offset = {"train": 0, "val": 1, "test": 2}[split]
        return replace(self.config, num_samples=self.split_sizes[split], seed=self.config.seed + offset)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The demo tokenizer, built into the cache on first access if needed."""
        if self._tokenizer is None:
            build_demo_tokenizer(self.tokenizer_path or "")
        return super().tokenizer

    def prepare_data(self) -> None:
        """Generate missing splits (idempotent; a split is complete once its ``done.json`` exists)."""
        build_demo_tokenizer(self.tokenizer_path or "")
        for split, target in self.split_dirs.items():
            if (target / "done.json").exists():
                continue
            cfg = self.split_config(split)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=self.cache_dir))
            paths = generate_shards(cfg, tmp)
            (tmp / "done.json").write_text(json.dumps({"config": asdict(cfg), "shards": [p.name for p in paths]}))
            if (target / "done.json").exists():  # another process finished first: same bytes
                shutil.rmtree(tmp)
                continue
            if target.exists():  # an incomplete earlier attempt
                shutil.rmtree(target)
            os.rename(tmp, target)
            log.info("generated %d synthetic %s samples in %s", cfg.num_samples, split, target)

    def setup(self, stage: str | None = None) -> None:
        """Generate first if ``prepare_data`` was not called (outside a Trainer), then read."""
        if not all((path / "done.json").exists() for path in self.split_dirs.values()):
            self.prepare_data()
        super().setup(stage)
