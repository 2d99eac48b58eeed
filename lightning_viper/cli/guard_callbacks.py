"""NanGuard and Preemption in every run, whatever an overlay does to ``trainer.callbacks``.

A recipe lists its callbacks, and an overlay (a second ``--config``, or
``--trainer.callbacks=[...]``) that sets ``trainer.callbacks`` replaces that list. Without the two
guards a NaN would be trained on and checkpointed, and SIGTERM would save nothing. So after the
config is resolved, :func:`add_missing_guards` adds each guard the list lacks, first in the list,
with its default arguments, and says so at INFO. Only an explicit ``guards: false`` (``--guards=false``
on the command line, or the top-level recipe key) runs without them; a guard still listed in
``trainer.callbacks`` is kept even then, since it was asked for.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning import Callback

log = logging.getLogger("lightning_viper")

GUARDS = {  # class path -> what the run would lose without it
    "lightning_viper.callbacks.NanGuard": "NaN/Inf losses would be trained on and could be checkpointed",
    "lightning_viper.callbacks.Preemption": "SIGTERM/SIGINT would save no checkpoint and leave the run RUNNING",
}
GUARDS_HELP = (
    "Add NanGuard and Preemption to trainer.callbacks when they are missing (default true). false runs "
    "without the ones trainer.callbacks does not list (docs/reliability.md)."
)


def _load(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def _listed(callbacks: list[Any], guard: type) -> bool:
    for cb in callbacks:
        cls = _load(str(cb.get("class_path", ""))) if isinstance(cb, Namespace | dict) else type(cb)
        if cls is not None and issubclass(cls, guard):
            return True
    return False


def _with_defaults(class_path: str) -> Namespace:
    """``class_path`` with its default ``init_args`` spelled out, as the resolved config shows them."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--callback", type=Callback)
    spec: Namespace = parser.parse_object({"callback": {"class_path": class_path}}).callback
    return spec


def add_missing_guards(config: Any, enabled: bool) -> list[str]:
    """Add the guards ``config.trainer.callbacks`` lacks (a subcommand's resolved config, in place).

    Returns the class paths added; with ``enabled`` false adds none and warns about each missing one."""
    trainer = config.get("trainer")
    if trainer is None:
        return []
    callbacks = trainer.get("callbacks")
    callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
    missing = []
    for path, loss in GUARDS.items():
        guard = _load(path)
        if guard is None:
            raise ImportError(f"{path} cannot be imported: the lightning_viper install is broken")
        if not _listed(callbacks, guard):
            missing.append((path, loss))
    if not enabled:
        for path, loss in missing:
            log.warning("guards: false: running without %s (%s)", path.rsplit(".", 1)[-1], loss)
        return []
    added = [_with_defaults(path) for path, _ in missing]
    for path, _ in missing:
        log.info(
            "trainer.callbacks has no %s: added it with its defaults (--guards=false runs without it)",
            path.rsplit(".", 1)[-1],
        )
    trainer["callbacks"] = [*added, *callbacks]
    return [path for path, _ in missing]
