"""``python -m lightning_viper.bench VERB '{"frames": [64, 256], ...}'``: ``viper bench VERB`` for machines
without the CLI's dependencies (the GPU image lacks jsonargparse and PyAV).

The verbs are those of :func:`lightning_viper.cli.viper.bench_verbs` (the model benchmarks and
``table``), called with JSON keyword arguments; ``table`` also takes the results file alone
(``python -m lightning_viper.bench table docs/benchmarks/prefill_whole.json``). A benchmark logs a
one-line summary per row at the end; ``table`` prints its markdown.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from typing import Any, NoReturn

from lightning_viper.cli.viper import bench_verbs

log = logging.getLogger("lightning_viper.bench")


def bad_input(message: str) -> NoReturn:
    """One line on stderr and exit status 2, like the ``viper`` verbs."""
    sys.stderr.write(message + "\n")
    raise SystemExit(2)


def parse(argv: list[str], verbs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``[VERB, JSON_KWARGS?]`` (or ``["table", PATH]``) -> the verb and its keyword arguments."""
    usage = f"usage: python -m lightning_viper.bench {'|'.join(verbs)} ['<json kwargs>'] (table: a results path)"
    if not argv or argv[0] not in verbs or len(argv) > 2:
        bad_input(usage)
    verb, rest = argv[0], argv[1:]
    if verb == "table" and rest and not rest[0].lstrip().startswith("{"):
        return verb, {"results": rest[0]}
    try:
        kwargs = json.loads(rest[0]) if rest else {}
    except json.JSONDecodeError as error:
        bad_input(f"{verb}: the arguments are not JSON ({error}): e.g. '{{\"frames\": [64, 256]}}'")
    if not isinstance(kwargs, dict):
        bad_input(f"{verb}: the arguments must be a JSON object of keyword arguments, got {rest[0]!r}")
    return verb, kwargs


def main(argv: list[str]) -> None:
    logging.basicConfig(level=os.environ.get("VIPER_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    verbs = bench_verbs()
    verb, kwargs = parse(argv, verbs)
    try:
        inspect.signature(verbs[verb]).bind(**kwargs)
    except TypeError as error:
        bad_input(f"{verb}: {error} (its arguments: {', '.join(inspect.signature(verbs[verb]).parameters)})")
    try:
        result = verbs[verb](**kwargs)
    except (FileNotFoundError, ValueError) as error:  # bad input: the message alone (DEBUG: the traceback)
        if os.environ.get("VIPER_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        bad_input(f"{verb}: {error}")
    if isinstance(result, str):
        sys.stdout.write(result + "\n")
        return
    if "regions_ms" in result:
        log.info("regions ms: %s", json.dumps({k: round(v, 1) for k, v in result["regions_ms"].items()}))
    for row in [*result.get("rows", []), *result.get("peer", [])]:
        log.info("%s", json.dumps({k: v for k, v in row.items() if k not in ("flops", "latency_runs_ms")}, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
