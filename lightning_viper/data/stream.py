"""Iterable datasets over WebDataset shards: a resampled weighted mixture for training and a
deterministic, rank- and worker-disjoint single pass for evaluation.

Bad samples (corrupt media, bad JSON, missing members, truncated tars) are skipped, logged and
counted; the count rides on the next good sample (``Sample.skipped``) and so reaches the batch.
"""

from __future__ import annotations

import glob
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import braceexpand
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from lightning_viper.data.sample import BadSample, Sample

log = logging.getLogger(__name__)


def expand_shards(pattern: str | Sequence[str]) -> list[str]:
    """Brace-expand and glob shard patterns; remote URLs (``scheme://``, ``pipe:``) pass unchanged.

    Raises:
        FileNotFoundError: a local pattern matches no file (the message names it).
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    urls: list[str] = []
    for pat in patterns:
        for item in braceexpand.braceexpand(str(pat)):
            if "://" in item or item.startswith("pipe:"):
                urls.append(item)
                continue
            item = os.path.expanduser(item)
            matches = sorted(glob.glob(item)) if glob.has_magic(item) else ([item] if os.path.isfile(item) else [])
            if not matches:
                raise FileNotFoundError(f"shard pattern {pat!r} matches no file ({item!r} not found): check the path")
            urls.extend(matches)
    if not urls:
        raise FileNotFoundError(f"shard pattern {pattern!r} is empty")
    return urls


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed if initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


@dataclass
class SkipCounter:
    """Counts skipped samples in one process; also the WebDataset exception handler for tar errors."""

    pending: int = 0

    def skip(self, key: str, url: str, reason: str) -> None:
        self.pending += 1
        log.warning("skipping sample %s in %s: %s", key, url, reason)

    def __call__(self, exn: Exception) -> bool:  # webdataset handler: count, warn, continue
        self.skip("?", "?", f"{type(exn).__name__}: {exn}")
        return True

    def attach(self, sample: Sample) -> Sample:
        sample.skipped, self.pending = self.pending, 0
        return sample


def _raw_samples(urls: Sequence[str], counter: SkipCounter) -> Iterator[dict[str, Any]]:
    yield from tarfile_samples([{"url": u} for u in urls], handler=counter)


def _decoded(raw: Iterator[dict[str, Any]], decode: Callable[[dict[str, Any]], Sample], counter: SkipCounter):
    for item in raw:
        try:
            sample = decode(item)
        except BadSample as exn:
            counter.skip(str(item.get("__key__")), str(item.get("__url__")), str(exn))
            continue
        yield counter.attach(sample)


class EvalStream(IterableDataset):
    """One deterministic pass over ``urls``, disjoint across ranks and workers.

    With at least ``world_size * num_workers`` shards each (rank, worker) reads its own shards
    (``shards[slot::slots]``); with fewer, every reader reads all shards and keeps sample ``i`` when
    ``i % slots == slot``. Either way the readers' samples partition the data set.
    ``rank``/``world_size`` default to :func:`rank_and_world` at iteration time.
    """

    def __init__(
        self,
        urls: Sequence[str],
        decode: Callable[[dict[str, Any]], Sample],
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.urls, self.decode, self.rank, self.world_size = list(urls), decode, rank, world_size

    def __iter__(self) -> Iterator[Sample]:
        rank, world = rank_and_world() if self.rank is None else (self.rank, self.world_size or 1)
        worker, workers = _worker()
        slots, slot = world * workers, rank * workers + worker
        counter = SkipCounter()
        if len(self.urls) >= slots:
            yield from _decoded(_raw_samples(self.urls[slot::slots], counter), self.decode, counter)
            return
        mine = (r for i, r in enumerate(_raw_samples(self.urls, counter)) if i % slots == slot)
        yield from _decoded(mine, self.decode, counter)


class TrainStream(IterableDataset):
    """Endless resampled mixture, cut to ``epoch_samples`` samples per pass (over all readers).

    Each step picks a source with probability proportional to its weight and takes the next sample
    of that source's current shard (a new random shard when one ends); a shuffle buffer of
    ``shuffle_buffer`` samples mixes further. The random stream is seeded from ``seed``, the rank,
    the worker and the DataLoader's per-epoch worker seed, so it is reproducible under
    ``seed_everything`` and differs between ranks, workers and epochs.
    """

    def __init__(
        self,
        sources: Sequence[Sequence[str]],
        weights: Sequence[float],
        decode: Callable[[dict[str, Any]], Sample],
        epoch_samples: int,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("give one weight per train source")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
        self.sources, self.weights = [list(s) for s in sources], [float(w) for w in weights]
        self.decode, self.epoch_samples, self.shuffle_buffer, self.seed = decode, epoch_samples, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self._passes = 0

    def __iter__(self) -> Iterator[Sample]:
        rank, world = rank_and_world() if self.rank is None else (self.rank, self.world_size or 1)
        worker, workers = _worker()
        self._passes += 1
        base = torch.initial_seed() if get_worker_info() is not None else 0
        rng = random.Random(f"{self.seed}-{rank}-{worker}-{base}-{self._passes}")
        quota = -(-self.epoch_samples // (world * workers))  # ceil: samples this reader yields
        counter = SkipCounter()
        iters: list[Iterator[Sample] | None] = [None] * len(self.sources)
        buffer: list[Sample] = []
        produced = 0
        failures = 0
        while produced < quota:
            if len(buffer) >= min(self.shuffle_buffer, quota - produced):
                produced += 1
                yield buffer.pop(rng.randrange(len(buffer)))
                continue
            s = rng.choices(range(len(self.sources)), weights=self.weights)[0]
            it = iters[s]
            sample = next(it, None) if it is not None else None
            if sample is None:  # open a new random shard of this source
                iters[s] = _decoded(_raw_samples([rng.choice(self.sources[s])], counter), self.decode, counter)
                failures += 1
                if failures > 100 + 10 * sum(len(x) for x in self.sources):
                    raise RuntimeError(f"no usable sample in the train shards {self.sources}: all skipped or empty")
                continue
            failures = 0
            buffer.append(sample)
