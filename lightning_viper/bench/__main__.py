"""``python -m lightning_viper.bench prefill|train|breakdown '{"frames": [64, 256], ...}'`` (JSON keyword arguments),
``python -m lightning_viper.bench table results.json`` (a prefill results file as a markdown table).

For machines without the CLI's dependencies (the GPU image lacks jsonargparse); ``viper bench``
is the user-facing entry point. Prints a one-line summary per row at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_viper.bench import bench_breakdown, bench_prefill, bench_train


def main(argv: list[str]) -> None:
    logging.basicConfig(level=os.environ.get("VIPER_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    verbs: dict[str, Callable[..., dict[str, Any]]] = {
        "prefill": bench_prefill,
        "train": bench_train,
        "breakdown": bench_breakdown,
    }
    if len(argv) == 2 and argv[0] == "table":
        from lightning_viper.bench.table import prefill_table

        sys.stdout.write(prefill_table(json.loads(Path(argv[1]).read_text())) + "\n")
        return
    if not argv or argv[0] not in verbs:
        raise SystemExit(
            "usage: python -m lightning_viper.bench prefill|train|breakdown '<json kwargs>' | table <results.json>"
        )
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    result = verbs[argv[0]](**kwargs)
    log = logging.getLogger("lightning_viper.bench")
    if "regions_ms" in result:
        log.info("regions ms: %s", json.dumps({k: round(v, 1) for k, v in result["regions_ms"].items()}))
    for row in [*result.get("rows", []), *result.get("peer", [])]:
        log.info("%s", json.dumps({k: v for k, v in row.items() if k not in ("flops", "latency_runs_ms")}, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
