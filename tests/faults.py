"""Faults injected at the layer where they happen, for tests of what a failure leaves behind."""

from __future__ import annotations

import builtins
import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest


class _FullDisk:
    """A binary file that takes ``budget`` bytes, then fails as a full disk does (partial write)."""

    def __init__(self, real: Any, budget: int) -> None:
        self._real, self._left = real, budget

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        if len(view) > self._left:
            self._real.write(view[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(view)
        return int(self._real.write(view))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()


def fill_disk_under(directory: Path, monkeypatch: pytest.MonkeyPatch, budget: int = 4096) -> None:
    """Make ``directory`` a full disk of its own: every binary file written there stops with ENOSPC
    after ``budget`` bytes, and a rename into it from outside fails with EXDEV (another
    filesystem), so ``shutil.move`` falls back to copying, as it does across real disks."""
    inside = directory.resolve()
    real_open, real_rename, real_replace = builtins.open, os.rename, os.replace

    def under(path: Any) -> bool:
        return Path(os.fspath(path)).resolve().is_relative_to(inside)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        return _FullDisk(f, budget) if "w" in mode and "b" in mode and under(file) else f

    def crossing(real: Any) -> Any:
        def move(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if under(dst) and not under(src):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "rename", crossing(real_rename))
    monkeypatch.setattr(os, "replace", crossing(real_replace))
    monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # copy through file writes, as above
