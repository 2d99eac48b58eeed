"""The ``viper`` console script: the project's own verbs (training and evaluation are ``lightning``).

viper synth   OUT_DIR [--num_samples ...]     synthetic long-video shards
viper pack    ANNOTATIONS MEDIA_ROOT OUT_DIR FORMAT [--shard_size_mb 256] [--workers 4] [--prefix shard]
              [--check true] [--limit N] [--answers FILE]   real data -> shards; FORMAT: llava_video,
              videomme, mlvu, longvideobench[_subtitles], lvbench, egoschema, charades, activitynet_captions,
              youcook2, timeviper (docs/data.md)
viper compare recipes/compare/demo.yaml [--override key=value ...] [--ckpt_path CKPT] [-- ARGS...]
viper analyze knockout|attention --config RECIPE --ckpt_path CKPT --out DIR [--override key=value ...]
viper convert timeviper SRC DST [--tokenizer DIR]   a TimeViper checkpoint -> model directory + recipe
viper export  CKPT DST RECIPE [--override key=value ...]   a trained checkpoint -> a self-contained model directory
viper ask     --config RECIPE --ckpt_path CKPT VIDEO QUESTION   an answer, its frames, tokens and times
viper summary [--experiment demo] [--tracking_uri sqlite:///mlflow.db]   latest MLflow run and its test metrics
viper bench   data | data_memory | prefill | train | breakdown | table RESULTS.json ...
viper tokenizer '[SHARDS_OR_ANNOTATIONS,...]' OUT_DIR [--vocab_size 8000]   byte-level BPE

Each verb is a typed function: jsonargparse builds its parser, and the help comes from its
docstring (first line: the verb's description; Args: the options), printed as plain text
(cli/help.py). A group of verbs is a dict with a "_help" entry. This module imports neither
jsonargparse nor PyAV at import time, so ``python -m lightning_viper.bench`` can share
:func:`bench_verbs` on the GPU image. Bad input (a missing file or store, a file of the wrong kind:
``FileNotFoundError``, ``ValueError``, ``NoRunError``, ``TrackingStoreError``) ends with its message
and exit 2, without a traceback (``VIPER_LOG_LEVEL=DEBUG`` shows it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger("lightning_viper")

DESCRIPTION = (
    "lightning-viper's own verbs: synthetic and real video shards, tokenizers, strategy comparisons, "
    "run summaries and benchmarks. Train and evaluate with: lightning fit|validate|test|predict --config RECIPE."
)
BENCH_HELP = "Measure speed and memory: data loading, prefill, training steps, profiles; table prints results."


def bench_verbs() -> dict[str, Any]:
    """The model benchmarks, one verb per ``bench_<name>`` that :mod:`lightning_viper.bench` exports
    (named ``<name>``), and ``table``: ``viper bench`` and ``python -m lightning_viper.bench`` both
    serve these. Imports no jsonargparse and no PyAV (the GPU image has neither)."""
    import lightning_viper.bench as bench
    from lightning_viper.bench.table import bench_table

    found = {name.removeprefix("bench_"): getattr(bench, name) for name in bench.__all__ if name.startswith("bench_")}
    return {**found, "table": bench_table}


def verbs() -> dict[str, Any]:
    """Verb name -> typed function (or a dict of them with a "_help" line); jsonargparse builds the parsers."""
    from lightning_viper.analysis.command import analyze_attention, analyze_knockout
    from lightning_viper.cli.ask import ask
    from lightning_viper.compare import compare
    from lightning_viper.convert import convert_timeviper
    from lightning_viper.data.bench import bench_data
    from lightning_viper.data.bench_memory import bench_data_memory
    from lightning_viper.data.pack import pack
    from lightning_viper.data.synth import synth
    from lightning_viper.export import export
    from lightning_viper.text.bpe import train_tokenizer
    from lightning_viper.tracking.summary import summary

    return {
        "synth": synth,
        "pack": pack,
        "compare": compare,
        "analyze": {
            "_help": "Information-flow analysis of a trained model: token knockout and attention maps.",
            "knockout": analyze_knockout,
            "attention": analyze_attention,
        },
        "tokenizer": train_tokenizer,
        "summary": summary,
        "convert": {"_help": "Convert other projects' checkpoints: timeviper.", "timeviper": convert_timeviper},
        "export": export,
        "ask": ask,
        "bench": {"_help": BENCH_HELP, "data": bench_data, "data_memory": bench_data_memory, **bench_verbs()},
    }


def main(args: list[str] | None = None) -> None:
    from jsonargparse import auto_cli

    from lightning_viper.cli.help import PlainParser

    logging.basicConfig(level=os.environ.get("VIPER_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    from lightning_viper.cli.argv import config_as_recipe, plain_overrides  # --config RECIPE; --override k=v
    from lightning_viper.tracking.store import TrackingStoreError
    from lightning_viper.tracking.summary import NoRunError

    argv = plain_overrides(config_as_recipe(sys.argv[1:] if args is None else args))
    try:
        result = auto_cli(verbs(), args=argv, as_positional=True, parser_class=PlainParser, description=DESCRIPTION)
    except (
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        ValueError,
        NoRunError,
        TrackingStoreError,
    ) as error:
        # bad input (a missing file or store, a file of the wrong kind): its message, no traceback;
        # VIPER_LOG_LEVEL=DEBUG shows the traceback
        log.debug("viper %s failed", " ".join(argv[:1]), exc_info=True)
        log.error("%s", error)
        raise SystemExit(2) from None
    if isinstance(result, str):  # text meant for reading (viper summary, viper bench table)
        print(result)
    elif result is not None:
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
