"""WebDataset video datamodule: shards of ``<key>.mp4`` + ``<key>.json`` -> :class:`VideoBatch`.

Format of the shards: docs/data.md. Training reads an endless resampled (weighted) mixture cut into
epochs of ``epoch_length`` samples; val/test/predict read their shards once, deterministically,
split across ranks and workers without overlap. Bad samples are skipped, warned about and counted
(``VideoBatch.skipped`` per batch, :attr:`VideoDataModule.skipped_total` overall, also for predict).

Exact resume: the datamodule records, from every consumed train batch, where each reader (rank x
worker) stands in the epoch; Lightning saves that in checkpoints (``state_dict``) and a resumed fit
continues every reader's stream where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data.dataloader import _BaseDataLoaderIter
from transformers import PreTrainedTokenizerBase

from lightning_viper.batch import VideoBatch
from lightning_viper.data.collate import VideoCollator
from lightning_viper.data.sample import SampleDecoder
from lightning_viper.data.stream import EvalStream, StreamPosition, TrainStream, expand_shards, rank_and_world
from lightning_viper.text.templates import PlainTemplate, PromptTemplate
from lightning_viper.text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
ShardSpec = str | list[str]
TrainSpec = str | list[str] | list[dict[str, Any]]


def parse_mixture(spec: TrainSpec) -> tuple[list[list[str]], list[float]]:
    """A pattern, a list of patterns (one source), or ``[{shards: ..., weight: w}, ...]`` -> sources, weights."""
    if isinstance(spec, list) and spec and all(isinstance(s, dict) for s in spec):
        sources, weights = [], []
        for comp in spec:
            assert isinstance(comp, dict)
            if "shards" not in comp:
                raise ValueError(f"mixture component {comp!r} needs a 'shards' entry (and optionally 'weight')")
            sources.append(expand_shards(comp["shards"]))
            weights.append(float(comp.get("weight", 1.0)))
        return sources, weights
    if isinstance(spec, list) and any(isinstance(s, dict) for s in spec):
        raise ValueError("mix either plain shard patterns or {shards, weight} entries, not both")
    return [expand_shards(spec)], [1.0]  # type: ignore[arg-type]


class TrainLoader(DataLoader):
    """A DataLoader that tells its :class:`TrainStream` which epoch it runs and where its readers
    stand, each time an epoch's iterator is created (workers then start from that position)."""

    def __init__(self, dataset: TrainStream, position: Callable[[], StreamPosition], **kwargs: Any) -> None:
        super().__init__(dataset, persistent_workers=False, **kwargs)
        self._position = position

    def __iter__(self) -> _BaseDataLoaderIter:
        assert isinstance(self.dataset, TrainStream)
        self.dataset.set_position(self._position())
        return super().__iter__()


class VideoDataModule(LightningDataModule):
    """Video QA / multiple choice / captioning / grounding / image-text from WebDataset shards.

    Args:
        train: shard pattern(s) (brace expansion and globs), or a weighted mixture
            ``[{shards: "a-{000..009}.tar", weight: 0.7}, {shards: [...], weight: 0.3}]``.
        val, test, predict: shard pattern(s) read once in order; predict defaults to test.
        tokenizer: local tokenizer directory (see :func:`lightning_viper.text.load_tokenizer`).
        template: prompt template of the backbone family (default :class:`PlainTemplate`).
        image_size: frame side in pixels; must match the encoder's ``image_size``.
        fps: sampling rate in frames per second (1.0 as in TimeViper).
        num_frames: sample exactly this many frames per video instead of ``fps``.
        max_frames: uniform subsampling cap per video (256 in TimeViper training).
        batch_size: samples per batch (per rank).
        num_workers: DataLoader workers per rank.
        shuffle_buffer: samples held for shuffling the train stream.
        epoch_length: train samples per epoch over all ranks and workers.
        seed: seed of the train stream (combined with rank, worker and the epoch's worker seed).
        max_answer_tokens: cut longer answers (eos kept); None keeps all.
        grounding_context: state the video length and frame count in grounding questions.
        even_eval: with several ranks, pad val/test/predict readers to equal length by repeating a
            sample marked ``meta["padding"] = True`` (FSDP needs equal batch counts; metrics skip
            padded samples). Readers that skipped bad samples are padded too.
    """

    def __init__(
        self,
        train: TrainSpec | None = None,
        val: ShardSpec | None = None,
        test: ShardSpec | None = None,
        predict: ShardSpec | None = None,
        tokenizer: str | None = None,
        template: PromptTemplate | None = None,
        image_size: int = 384,
        fps: float = 1.0,
        num_frames: int | None = None,
        max_frames: int | None = 256,
        batch_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        epoch_length: int = 10_000,
        seed: int = 0,
        max_answer_tokens: int | None = None,
        grounding_context: bool = True,
        even_eval: bool = True,
    ) -> None:
        super().__init__()
        self.train_shards, self.val_shards, self.test_shards = train, val, test
        self.predict_shards = predict if predict is not None else test
        self.tokenizer_path = tokenizer
        self.template: PromptTemplate = template if template is not None else PlainTemplate()
        self.image_size, self.fps, self.num_frames, self.max_frames = image_size, fps, num_frames, max_frames
        self.batch_size, self.num_workers, self.shuffle_buffer = batch_size, num_workers, shuffle_buffer
        self.epoch_length, self.seed, self.max_answer_tokens = epoch_length, seed, max_answer_tokens
        self.grounding_context, self.even_eval = grounding_context, even_eval
        self.skipped_total = 0
        self._epoch = 0  # train epoch the positions below belong to
        self._positions: dict[int, tuple[int, int]] = {}  # this rank's worker -> (encoded consumed, yielded)
        self._restored: dict[str, Any] | None = None  # a checkpoint's stream state, until its epoch starts
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._datasets: dict[str, IterableDataset] = {}

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (loaded on first access; ``<video>`` and a pad token guaranteed)."""
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise ValueError("VideoDataModule needs tokenizer=<local tokenizer directory>")
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def decoder(self) -> SampleDecoder:
        return SampleDecoder(
            image_size=self.image_size,
            fps=self.fps,
            num_frames=self.num_frames,
            max_frames=self.max_frames,
            grounding_context=self.grounding_context,
        )

    @property
    def collator(self) -> VideoCollator:
        return VideoCollator(self.tokenizer, self.template, self.max_answer_tokens)

    def _rank_world(self) -> tuple[int, int]:
        """Resolved here, in the main process: DataLoader workers may not see torch.distributed."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return rank_and_world()

    def _check_encoder(self) -> None:
        """Frames are decoded at ``image_size``: it must be what the model's encoder takes."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        size = getattr(getattr(model, "encoder", None), "image_size", None)
        if size is not None and int(size) != self.image_size:
            raise ValueError(
                f"data image_size={self.image_size} but the encoder takes {size}x{size} frames: "
                f"set data.init_args.image_size to {size} (or change the encoder)"
            )

    def setup(self, stage: str | None = None) -> None:
        """Expand shard patterns (a pattern matching nothing raises here, naming it), check the frame
        size against the model's encoder, and build datasets."""
        self._check_encoder()
        rank, world = self._rank_world()
        if stage in (None, "fit") and self.train_shards is not None:
            sources, weights = parse_mixture(self.train_shards)
            self._datasets["train"] = TrainStream(
                sources, weights, self.decoder, self.epoch_length, self.shuffle_buffer, self.seed, rank, world
            )
        wanted = {"fit": ["val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}
        for split in wanted.get(stage or "", ["val", "test", "predict"]):
            spec = {"val": self.val_shards, "test": self.test_shards, "predict": self.predict_shards}[split]
            if spec is not None:
                pad = self.even_eval and world > 1
                self._datasets[split] = EvalStream(expand_shards(spec), self.decoder, rank, world, pad=pad)

    def _loader(self, split: str) -> DataLoader:
        if split not in self._datasets:
            raise ValueError(f"no {split} shards configured: pass {split}=<shard pattern> (and call setup)")
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collator,
            persistent_workers=False,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._datasets.get("train")
        if not isinstance(dataset, TrainStream):
            return self._loader("train")
        return TrainLoader(
            dataset,
            self._train_position,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collator,
            pin_memory=False,
        )

    def _train_position(self) -> StreamPosition:
        """Position of this rank's readers at the start of the epoch about to run."""
        epoch = self.trainer.current_epoch if self.trainer is not None else self._epoch
        if self._restored is not None and int(self._restored["epoch"]) == epoch:
            rank, world = self._rank_world()
            readers = self._restored["readers"]
            if len(readers) != world or any(len(r) not in (0, self.num_workers or 1) for r in readers):
                raise ValueError(
                    f"the checkpoint's data position is for {len(readers)} ranks x "
                    f"{[len(r) for r in readers]} workers; this run has {world} ranks x {self.num_workers or 1}: "
                    "resume with the same devices, num_nodes and data.init_args.num_workers"
                )
            self._positions = {int(w): (int(c), int(y)) for w, (c, y) in enumerate(readers[rank]) if c or y}
            log.info("train stream resumes in epoch %d at reader positions %s", epoch, self._positions)
        else:
            self._positions = {}
        self._restored, self._epoch = None, epoch
        return StreamPosition(epoch, dict(self._positions))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Keep the running count of skipped samples and, for train batches, each reader's position
        (main process; called for batches the loop consumes, not for prefetched ones)."""
        if isinstance(batch, VideoBatch):
            self.skipped_total += batch.skipped
            position = batch.meta[-1].get("stream") if batch.meta else None
            if position is not None:
                worker, consumed, yielded = (int(v) for v in position)
                self._positions[worker] = (consumed, yielded)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The train stream's position (every rank's readers) and the skip count, for checkpoints.

        With several ranks this gathers from all of them: Lightning calls it on every rank when it
        saves a checkpoint.
        """
        workers = self.num_workers or 1
        mine = torch.zeros(workers, 2, dtype=torch.long)  # (W, 2) encoded consumed, yielded
        for worker, (consumed, yielded) in self._positions.items():
            mine[worker] = torch.tensor([consumed, yielded])
        counts = torch.tensor([self.skipped_total], dtype=torch.long)  # (1,)
        _, world = self._rank_world()
        if world > 1 and self.trainer is not None:
            device = self.trainer.strategy.root_device
            gathered = self.trainer.strategy.all_gather(mine.to(device)).cpu().view(world, workers, 2)
            skipped = self.trainer.strategy.all_gather(counts.to(device)).cpu().view(world)
        else:
            gathered, skipped = mine.view(1, workers, 2), counts
        return {"epoch": self._epoch, "readers": gathered.tolist(), "skipped": skipped.tolist()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the skip count and the stream position (applied when its epoch's loader starts)."""
        rank, _ = self._rank_world()
        skipped = state_dict.get("skipped") or []
        self.skipped_total = int(skipped[rank]) if rank < len(skipped) else 0
        self._restored = state_dict if "readers" in state_dict else None
