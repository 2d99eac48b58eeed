"""Writing WebDataset shards: plain tar files, reproducible bytes, atomic completion.

A shard holds samples as consecutive members ``<key>.<ext>`` sharing a key. Keys must not contain
dots or slashes (WebDataset splits the extension at the first dot of the base name). Members get
fixed metadata (mtime 0, uid 0, mode 0644) so the same samples give byte-identical shards, and each
shard is written to ``<name>.tmp`` and renamed when complete, so a crash never leaves a shard that
looks finished.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def safe_key(text: str) -> str:
    """Make ``text`` a valid sample key (letters, digits, ``_`` and ``-`` only)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_") or "sample"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | Path, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> int:
    """Write ``(key, {ext: bytes})`` samples to the tar ``path`` atomically; returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            if not _KEY.match(key):
                raise ValueError(f"bad sample key {key!r}: use safe_key() (letters, digits, _ and - only)")
            for ext, data in members.items():
                _add(tar, f"{key}.{ext}", data)
    os.replace(tmp, path)
    return path.stat().st_size


class ShardWriter:
    """Roll samples into ``<out_dir>/<prefix>-000000.tar``, ... after ``max_count`` samples or
    ``max_bytes`` bytes of members, whichever comes first. ``close()`` returns the shard paths."""

    def __init__(
        self, out_dir: str | Path, prefix: str = "shard", max_count: int = 1000, max_bytes: int = 256 << 20
    ) -> None:
        self.out_dir, self.prefix, self.max_count, self.max_bytes = Path(out_dir), prefix, max_count, max_bytes
        self.paths: list[Path] = []
        self._pending: list[tuple[str, Mapping[str, bytes]]] = []
        self._bytes = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        size = sum(len(v) for v in members.values())
        if self._pending and (len(self._pending) >= self.max_count or self._bytes + size > self.max_bytes):
            self._flush()
        self._pending.append((key, members))
        self._bytes += size

    def _flush(self) -> None:
        if not self._pending:
            return
        path = self.out_dir / f"{self.prefix}-{len(self.paths):06d}.tar"
        write_shard(path, self._pending)
        self.paths.append(path)
        self._pending, self._bytes = [], 0

    def close(self) -> list[Path]:
        self._flush()
        return self.paths
