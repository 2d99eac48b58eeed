"""Iterable datasets over WebDataset shards, built from webdataset's own pipeline stages.

Train (one reader = one rank x DataLoader worker)::

    per source: ResampledShards -> tarfile_to_samples     encoded samples {"__key__", ext: bytes}
    -> seeded weighted mix of the sources -> shuffle      the buffer holds BYTES, never frames
    -> skip what a resumed run already consumed           no decoding on the way
    -> decode (BadSample: skipped and counted) -> cut at the epoch's quota

Eval: SimpleShardList -> this reader's shards (or every n-th sample) -> tarfile_to_samples -> decode,
padded so every reader yields the same number of samples when asked.

Bad samples (corrupt media, bad JSON, missing members, truncated tars) are skipped, logged and
counted; the count rides on the next good sample (``Sample.skipped``) and so reaches the batch.
Every train sample carries ``meta["stream"] = [worker, encoded position, good samples yielded]``:
the datamodule records it per consumed batch, and a resumed run continues from it
(:class:`StreamPosition`).
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import os
import random
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import braceexpand
import torch.distributed as dist
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from lightning_viper.data.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from lightning_viper.data.sample import BadSample, Sample

log = logging.getLogger(__name__)

Raw = dict[str, Any]  # {"__key__": str, "__url__": str, ext: bytes, ...}
_READ = frozenset((*VIDEO_EXTENSIONS, *IMAGE_EXTENSIONS, "json"))


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
    """Counts skipped samples in one reader; the count rides on the reader's next good sample."""

    pending: int = 0
    tar_errors: list[Exception] = field(default_factory=list)

    def skip(self, key: str, url: str, reason: str) -> None:
        self.pending += 1
        log.warning("skipping sample %s in %s: %s", key, url, reason)

    def tar_handler(self, exn: Exception) -> bool:
        """webdataset's exception handler: remember the error, continue with the next shard."""
        self.tar_errors.append(exn)
        return True

    def attach(self, sample: Sample) -> Sample:
        sample.skipped, self.pending = self.pending, 0
        return sample


def _is_read(fname: str) -> bool:
    """Read a member only if its last suffix is a media type or json (dotted keys reach the decoder,
    which names them); every other member is skipped unread."""
    return fname.rsplit(".", 1)[-1].lower() in _READ


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


def read_shards(shards: Iterable[dict[str, Any]], counter: SkipCounter, max_empty: int | None = None) -> Iterator[Raw]:
    """Encoded samples of each ``{"url": ...}`` in turn, read by webdataset's ``tarfile_to_samples``.

    The reader runs one shard at a time because webdataset reads a tar cut at a member boundary as
    complete: after each shard its end-of-archive blocks are checked. A truncated or corrupt shard
    counts one skip (the samples from the cut on are lost; every complete sample before it is kept).
    ``max_empty``: raise after that many shards in a row gave no sample (endless resampled lists).
    """
    reader = wds.tarfile_to_samples(handler=counter.tar_handler, select_files=_is_read)
    empty = 0
    for shard in shards:
        url = str(shard["url"])
        del counter.tar_errors[:]
        last = "(none)"
        for raw in reader([dict(shard)]):
            last = str(raw["__key__"])
            yield raw
        empty = empty + 1 if last == "(none)" else 0
        if max_empty is not None and empty > max_empty:
            raise RuntimeError(f"{empty} shards in a row held no readable sample (last: {url}): check the shards")
        if counter.tar_errors:
            reason = f"truncated or corrupt tar after sample {last}: {counter.tar_errors[0]}"
            counter.skip("(rest of shard)", url, reason)
        elif not _has_end_marker(url):
            reason = f"truncated tar after sample {last}: no end-of-archive blocks (samples after the cut are lost)"
            counter.skip("(rest of shard)", url, reason)


def shard_samples(url: str, counter: SkipCounter) -> Iterator[Raw]:
    """Encoded samples of one tar shard (see :func:`read_shards`)."""
    return read_shards([{"url": url}], counter)


def decoded(raw: Iterable[Raw], decode: Callable[[Raw], Sample], counter: SkipCounter) -> Iterator[Sample]:
    """Decode encoded samples; a :class:`BadSample` is logged, counted and skipped."""
    for item in raw:
        try:
            sample = decode(item)
        except BadSample as exn:
            counter.skip(str(item.get("__key__")), str(item.get("__url__")), str(exn))
            continue
        yield counter.attach(sample)


def _every_nth(items: Iterable[Any], slot: int, slots: int) -> Iterator[Any]:
    return itertools.islice(items, slot, None, slots)


class EvalStream(IterableDataset):
    """One deterministic pass over ``urls``, disjoint across ranks and workers.

    With at least ``world_size * num_workers`` shards each (rank, worker) reads its own shards
    (``shards[slot::slots]``); with fewer, every reader reads all shards and keeps sample ``i`` when
    ``i % slots == slot``. Either way the readers' samples partition the data set.
    ``rank``/``world_size`` default to :func:`rank_and_world` at iteration time. (webdataset's
    ``split_by_node`` asks torch.distributed inside the worker process, where it is not initialised;
    the rank is therefore resolved by the datamodule in the main process and passed in.)

    With ``pad=True`` every reader yields the same number of samples (the largest reader's count
    of tar samples, from a header scan of local shards): short readers repeat their first sample
    with ``meta["padding"] = True``. Ranks then run the same number of batches, which strategies
    with per-step collectives (FSDP) need; metrics must skip padded samples.
    """

    def __init__(
        self,
        urls: Sequence[str],
        decode: Callable[[Raw], Sample],
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

    def _samples(self, slot: int, slots: int, counter: SkipCounter) -> Iterator[Sample]:
        shards: Iterable[dict[str, Any]] = wds.SimpleShardList(self.urls)
        if len(self.urls) >= slots:
            return decoded(read_shards(_every_nth(shards, slot, slots), counter), self.decode, counter)
        return decoded(_every_nth(read_shards(shards, counter), slot, slots), self.decode, counter)

    def __iter__(self) -> Iterator[Sample]:
        rank, world = rank_and_world() if self.rank is None else (self.rank, self.world_size or 1)
        worker, workers = _worker()
        slots, slot = world * workers, rank * workers + worker
        counter = SkipCounter()
        samples = self._samples(slot, slots, counter)
        target = self._target(slots) if self.pad and slots > 1 else None
        if target is None:
            yield from samples
            if counter.pending:
                log.warning("%d bad samples after this reader's last good one were skipped", counter.pending)
            return
        first, yielded = None, 0
        for sample in samples:
            if first is None:
                first = sample
            yielded += 1
            yield sample
        if yielded < target and first is None:  # nothing usable here: borrow the data set's first sample
            first = next(self._samples(0, 1, SkipCounter()), None)
            if first is None:
                raise RuntimeError(f"no decodable sample in the eval shards {self.urls[:3]}...: cannot pad")
        for i in range(target - yielded):
            assert first is not None
            # the skips after the last good sample ride on the first padding sample
            yield replace(first, meta={**first.meta, "padding": True}, skipped=counter.pending if i == 0 else 0)
            counter.pending = 0


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


@dataclass
class StreamPosition:
    """Where each train reader of one rank stands in an epoch: worker -> (encoded samples consumed,
    good samples yielded). The datamodule keeps it from consumed batches and hands it back on resume."""

    epoch: int = 0
    readers: dict[int, tuple[int, int]] = field(default_factory=dict)


def _seed(text: str) -> int:
    """A 31-bit seed from text, the same in every process (``hash(str)`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def _mix(sources: Sequence[Iterator[Raw]], weights: Sequence[float], rng: random.Random) -> Iterator[Raw]:
    """Draw the next sample from a source picked by weight.

    Not webdataset's RandomMix: it draws from the process-global ``random`` module, so a reader's
    mixture could neither be reproduced from its seed nor replayed exactly on resume.
    """
    indices = range(len(sources))
    while True:
        yield next(sources[rng.choices(indices, weights=weights)[0]])


class TrainStream(IterableDataset):
    """Endless resampled weighted mixture, cut to ``epoch_samples`` good samples per pass (over
    all readers).

    Each source resamples its shards (``ResampledShards``); a sample is drawn from a source with
    probability proportional to its weight; ``shuffle_buffer`` encoded samples are shuffled before
    decoding (the first is handed out once ``shuffle_initial`` are buffered; the buffer then grows by
    one per sample handed out until full). Everything random is seeded from ``seed``, the rank, the
    worker and the epoch, so a pass is reproducible, differs between ranks, workers and epochs, and
    can be replayed: a resumed reader skips (without decoding) the encoded samples its position says
    were consumed.
    ``set_position`` is called by the datamodule's loader before each pass (in the main process;
    DataLoader workers receive the dataset with it).
    """

    def __init__(
        self,
        sources: Sequence[Sequence[str]],
        weights: Sequence[float],
        decode: Callable[[Raw], Sample],
        epoch_samples: int,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_initial: int = 100,
    ) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("give one weight per train source")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 (1 = no shuffling), got {shuffle_buffer}")
        self.sources, self.weights = [list(s) for s in sources], [float(w) for w in weights]
        self.decode, self.epoch_samples, self.shuffle_buffer, self.seed = decode, epoch_samples, shuffle_buffer, seed
        self.rank, self.world_size, self.shuffle_initial = rank, world_size, shuffle_initial
        self.position = StreamPosition()
        self._passes = 0  # passes run in this process without set_position (plain iteration)

    def set_position(self, position: StreamPosition) -> None:
        """The epoch to run and where its readers stand (empty readers: from the start)."""
        self.position = position
        self._passes = 0

    def _encoded(self, seed: str, counter: SkipCounter) -> Iterator[Raw]:
        """This reader's shuffled stream of encoded samples (endless)."""
        streams = []
        for s, urls in enumerate(self.sources):
            shards = wds.ResampledShards(urls, seed=_seed(f"{seed}-{s}"), worker_seed=lambda: 0, deterministic=True)
            streams.append(read_shards(shards, counter, max_empty=20 + 2 * len(urls)))
        mixed = _mix(streams, self.weights, random.Random(f"{seed}-mix"))
        initial = min(self.shuffle_buffer, self.shuffle_initial)
        return wds.shuffle(self.shuffle_buffer, initial=initial, rng=random.Random(f"{seed}-shuffle"))(mixed)

    def __iter__(self) -> Iterator[Sample]:
        rank, world = rank_and_world() if self.rank is None else (self.rank, self.world_size or 1)
        worker, workers = _worker()
        epoch = self.position.epoch + self._passes
        self._passes += 1
        seed = f"{self.seed}-{rank}-{worker}-{epoch}"
        consumed, yielded = self.position.readers.get(worker, (0, 0)) if self._passes == 1 else (0, 0)
        quota = -(-self.epoch_samples // (world * workers))  # ceil: good samples this reader yields
        counter = SkipCounter()
        encoded = self._encoded(seed, counter)
        for _ in itertools.islice(encoded, consumed):  # replay what the interrupted run consumed
            pass
        counter.pending = 0  # those skips were counted by the run that consumed them
        failures = 0
        for index, raw in enumerate(encoded, start=consumed + 1):
            if yielded >= quota:
                return
            try:
                sample = self.decode(raw)
            except BadSample as exn:
                counter.skip(str(raw.get("__key__")), str(raw.get("__url__")), str(exn))
                failures += 1
                if failures > 100 + 10 * sum(len(x) for x in self.sources):
                    raise RuntimeError(f"no usable sample in the train shards {self.sources}: all skipped") from exn
                continue
            failures = 0
            yielded += 1
            sample.meta["stream"] = [worker, index, yielded]
            yield counter.attach(sample)
