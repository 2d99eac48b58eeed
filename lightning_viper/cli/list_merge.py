"""Warn when an overlay's ``trainer.callbacks`` silently inherits arguments from the recipe's.

jsonargparse merges a list of ``class_path`` items given later (a second ``--config``, or
``--trainer.callbacks=[...]``) into the list before it *item by item* when both lists have the
same length: an item whose class is the earlier item's at the same index keeps every init_arg the
overlay does not set. An overlay ``ModelCheckpoint`` at the recipe's ModelCheckpoint's index thus
inherits ``monitor: val/loss``, ``filename`` and ``save_top_k``; with another length, or another
class at that index, the later list replaces the earlier one outright.

:func:`positional_inheritance` replays the command line's sources in order (config files read as
YAML, ``--trainer.callbacks`` values, ``+=`` appends) with that rule and reports every inherited
argument; :func:`warn_positional_merges` logs one warning per item. It only detects: the resolved
config (what ``--print_config`` prints and ``config-fit.yaml`` keeps) is jsonargparse's, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("lightning_viper")

SUBCOMMANDS = ("fit", "validate", "test", "predict")
OPTION = "--trainer.callbacks"


@dataclass(frozen=True)
class Inherited:
    """Arguments item ``index`` of ``source``'s callback list took from ``earlier``'s item at that index."""

    source: str
    earlier: str
    index: int
    name: str  # the class name
    values: dict[str, Any]

    def describe(self) -> str:
        return f"item {self.index} ({self.name}) keeps " + ", ".join(f"{k}={v!r}" for k, v in self.values.items())


def message(found: Sequence[Inherited]) -> str:
    """One warning for the items one source inherited (all of ``found`` share ``source``)."""
    first = found[0]
    items = "; ".join(i.describe() for i in found)
    return (
        f"trainer.callbacks: {first.source} gives a callback list as long as the one of {first.earlier}, and "
        f"jsonargparse merges two such lists item by item: {items} (from {first.earlier}; {first.source} does "
        f"not set them). If that is not meant, set these arguments in {first.source} (null for none). "
        "docs/reliability.md, 'Overlays and callback lists'"
    )


def _name(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _items(value: Any) -> list[dict[str, Any]] | None:
    """A callbacks list as ``{"class_path", "init_args"}`` dicts; None for anything else (a single
    callback or null replaces the list without merging)."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        return None
    return [{"class_path": v.get("class_path"), "init_args": dict(v.get("init_args") or {})} for v in value]


def _sources(args: Sequence[str]) -> list[tuple[str, str, Any]]:
    """(source name, "set" or "append", value) for each ``trainer.callbacks`` source, in order."""
    start = next((i + 1 for i, a in enumerate(args) if a in SUBCOMMANDS), 0)
    found: list[tuple[str, str, Any]] = []
    rest = iter(args[start:])
    for arg in rest:
        option, eq, value = arg.partition("=")
        if option not in ("--config", OPTION, OPTION + "+"):
            continue
        if not eq:
            value = next(rest, "")
        if option == "--config":
            try:
                loaded = yaml.safe_load(Path(value).read_text())
            except (OSError, yaml.YAMLError):
                continue  # jsonargparse reports an unreadable config itself
            trainer = loaded.get("trainer") if isinstance(loaded, dict) else None
            if isinstance(trainer, dict) and "callbacks" in trainer:
                found.append((value, "set", trainer["callbacks"]))
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            continue
        found.append((f"{option}=...", "append" if option.endswith("+") else "set", parsed))
    return found


def positional_inheritance(args: Sequence[str]) -> list[Inherited]:
    """Every init_arg that jsonargparse's item-by-item merge carries into a later callback list."""
    current: list[dict[str, Any]] = []
    owner = "the defaults"
    inherited: list[Inherited] = []
    for source, how, value in _sources(args):
        items = _items(value)
        if items is None:  # null, one callback, or a form this replay does not read: no merge follows from it
            current, owner = [], source
            continue
        if how == "append":
            current = current + items
            continue
        if current and len(current) == len(items):
            merged = []
            for i, (old, new) in enumerate(zip(current, items, strict=True)):
                same = new["class_path"] is None or (
                    old["class_path"] is not None and _name(str(old["class_path"])) == _name(str(new["class_path"]))
                )
                if not same:
                    merged.append(new)
                    continue
                kept = {k: v for k, v in old["init_args"].items() if k not in new["init_args"]}
                if kept:
                    name = _name(str(new["class_path"] or old["class_path"]))
                    inherited.append(Inherited(source, owner, i, name, kept))
                merged.append({"class_path": old["class_path"], "init_args": {**old["init_args"], **new["init_args"]}})
            items = merged
        current, owner = items, source
    return inherited


def warn_positional_merges(args: Sequence[str]) -> list[Inherited]:
    """Log a warning for each callback that inherits arguments by position (see the module docstring)."""
    found = positional_inheritance(args)
    for source in dict.fromkeys(i.source for i in found):
        log.warning("%s", message([i for i in found if i.source == source]))
    return found
