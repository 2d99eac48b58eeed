"""Checkpoint files: loaded without unpickling code, written under a temporary name then renamed.

``load_checkpoint`` is the one way the package reads a Lightning checkpoint: ``torch.load`` with
``weights_only=True``, which accepts tensors and plain values (dict, list, tuple, str, numbers,
None) and refuses any other pickled object, so a crafted file cannot run code. Lightning's own
checkpoints (state_dict, optimizer and scheduler states, loops, callback states, plain
hyperparameters) are all of that kind.

``AtomicCheckpointIO`` is the trainer's checkpoint writer in every ``lightning`` run: a save that
fails (full disk, quota, lost mount) leaves the previous file under the final name untouched
instead of a truncated one, and the error says where and what to do.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_viper.backbones.loading import CheckpointError

log = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the file under its final name was left as it was."""


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """A Lightning checkpoint as a dict, read with ``weights_only=True`` (memory-mapped).

    Raises ``CheckpointError`` when the file is missing or holds pickled objects other than
    tensors and plain values (``torch.load`` would have to run their code to rebuild them).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} {str(p)!r} does not exist")
    try:
        loaded = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        detail = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(
            f"{what} {str(p)!r} holds pickled objects other than tensors and plain values"
            f"{f' ({detail})' if detail else ''}; refusing to load it, because unpickling them can run "
            "code. Use a checkpoint written by lightning-viper, or, for a file you trust, re-save only "
            "its tensors: torch.save({'state_dict': model.state_dict()}, path)"
        ) from None
    except RuntimeError as error:  # not a torch zip file: truncated, corrupt or another format
        raise CheckpointError(f"{what} {str(p)!r} is not a readable PyTorch checkpoint: {error}") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{what} {str(p)!r} holds a {type(loaded).__name__}, not a Lightning checkpoint dict")
    return loaded


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` that writes ``.NAME.tmp-PID`` beside the target, flushes
    it to disk, then renames it over the target (``os.replace``, atomic on one filesystem).

    Remote paths (``s3://`` and the like) keep Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO.save_checkpoint does not take storage_options; "
                "use a custom CheckpointIO plugin to pass them"
            )
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as error:
            tmp.unlink(missing_ok=True)
            cause = _os_error(error)  # torch's zip writer reports a failed write as a RuntimeError
            if cause is None:
                raise
            failure = CheckpointWriteError(_write_failure(target, cause))
            failure.errno = cause.errno
            raise failure from error
        _fsync_dir(target.parent)


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (itself, or what it was raised from or during), if any."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None or isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _write_failure(target: Path, error: OSError) -> str:
    kept = "the previous file under that name is unchanged" if target.exists() else "no file was left under that name"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(target.parent).free / 2**20
        fix = f"free space under {target.parent} ({free:.0f} MiB free now)"
    elif error.errno in (errno.EROFS, errno.EACCES):
        fix = f"make {target.parent} writable"
    else:
        fix = f"check the disk under {target.parent}"
    return (
        f"could not write checkpoint {target} ({error.strerror or error}); {kept}. Training stopped: {fix} "
        "or point the ModelCheckpoint dirpath elsewhere, then resume from the last good checkpoint (--ckpt_path)"
    )


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:  # some filesystems refuse fsync on directories; the file itself is synced
        log.debug("fsync of %s failed: %s", directory, error)
    finally:
        os.close(fd)
