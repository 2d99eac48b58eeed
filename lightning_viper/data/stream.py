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
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import braceexpand
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen

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
    """Counts skipped samples in one process (a reader's count rides on its next good sample)."""

    pending: int = 0

    def skip(self, key: str, url: str, reason: str) -> None:
        self.pending += 1
        log.warning("skipping sample %s in %s: %s", key, url, reason)

    def attach(self, sample: Sample) -> Sample:
        sample.skipped, self.pending = self.pending, 0
        return sample


def _has_end_marker(url: str) -> bool:
    """A complete tar ends with zero blocks; a local file cut at a block boundary does not."""
    if "://" in url or url.startswith("pipe:") or not os.path.isfile(url):
        return True  # streams: cannot look at the end cheaply
    size = os.path.getsize(url)
    if size < 1024 or size % 512:
        return False
    with open(url, "rb") as f:
        f.seek(size - 1024)
        return f.read() == bytes(1024)


def shard_samples(url: str, counter: SkipCounter) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard as ``{"__key__", "__url__", ext: bytes, ...}``.

    Members are grouped by key (the base name up to its first dot; the rest, lower-cased, is the
    extension). A truncated or corrupt tar ends the shard and counts one skip (the sample being
    read when it broke is dropped).
    """
    current: dict[str, Any] | None = None
    try:
        with gopen(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not info.isreg() or info.name.startswith("__") or "." not in os.path.basename(info.name):
                    continue
                dirname, base = os.path.split(info.name)
                stem, ext = base.split(".", 1)
                key = os.path.join(dirname, stem)
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                current[ext.lower()] = data
    except (tarfile.TarError, OSError, EOFError) as exn:
        counter.skip(str(current["__key__"]) if current else "?", url, f"truncated or corrupt tar: {exn}")
        return
    if current is not None:
        yield current
    if not _has_end_marker(url):
        counter.skip("?", url, "truncated tar: no end-of-archive blocks (samples after the cut are lost)")


def _raw_samples(urls: Sequence[str], counter: SkipCounter) -> Iterator[dict[str, Any]]:
    for url in urls:
        yield from shard_samples(url, counter)


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

    With ``pad=True`` every reader yields the same number of samples (the largest reader's count
    of tar samples, from a header scan of local shards): short readers repeat their first sample
    with ``meta["padding"] = True``. Ranks then run the same number of batches, which strategies
    with per-step collectives (FSDP) need; metrics must skip padded samples.
    """

    def __init__(
        self,
        urls: Sequence[str],
        decode: Callable[[dict[str, Any]], Sample],
        rank: int | None = None,
        world_size: int | None = None,
        pad: bool = False,
    ) -> None:
        self.urls, self.decode, self.rank, self.world_size = list(urls), decode, rank, world_size
        self.pad = pad

    def _target(self, slots: int) -> int | None:
        """Samples every reader must yield when padding (None: counts unknown for remote shards)."""
        if any("://" in u or u.startswith("pipe:") for u in self.urls):
            log.warning("cannot count samples of remote shards: eval readers are not padded to equal length")
            return None
        counts = [count_samples(u) for u in self.urls]
        if len(self.urls) >= slots:
            return max(sum(counts[s::slots]) for s in range(slots))
        return -(-sum(counts) // slots)

    def __iter__(self) -> Iterator[Sample]:
        rank, world = rank_and_world() if self.rank is None else (self.rank, self.world_size or 1)
        worker, workers = _worker()
        slots, slot = world * workers, rank * workers + worker
        counter = SkipCounter()
        if len(self.urls) >= slots:
            samples = _decoded(_raw_samples(self.urls[slot::slots], counter), self.decode, counter)
        else:
            mine = (r for i, r in enumerate(_raw_samples(self.urls, counter)) if i % slots == slot)
            samples = _decoded(mine, self.decode, counter)
        target = self._target(slots) if self.pad and slots > 1 else None
        if target is None:
            yield from samples
            return
        first, yielded = None, 0
        for sample in samples:
            if first is None:
                first = sample
            yielded += 1
            yield sample
        if yielded < target and first is None:  # nothing usable here: borrow the data set's first sample
            first = next(_decoded(_raw_samples(self.urls, SkipCounter()), self.decode, SkipCounter()), None)
            if first is None:
                raise RuntimeError(f"no decodable sample in the eval shards {self.urls[:3]}...: cannot pad")
        for _ in range(target - yielded):
            assert first is not None
            yield replace(first, meta={**first.meta, "padding": True}, skipped=0)


def count_samples(url: str) -> int:
    """Number of samples (distinct keys) in a local tar shard, from its headers only (a truncated
    tar counts the samples before the cut)."""
    keys = set()
    try:
        with tarfile.open(url, "r:*") as tar:
            for info in tar:
                if info.isreg() and "." in os.path.basename(info.name) and not info.name.startswith("__"):
                    dirname, base = os.path.split(info.name)
                    keys.add(os.path.join(dirname, base.split(".", 1)[0]))
    except (tarfile.TarError, OSError, EOFError) as exn:
        log.warning("counting samples of %s stopped early: %s", url, exn)
    return len(keys)


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
