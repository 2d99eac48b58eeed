"""The ``viper`` console script: the project's own verbs.

viper synth   OUT_DIR [--num_samples ...]     synthetic long-video shards
viper pack    ANNOTATIONS MEDIA_ROOT OUT_DIR FORMAT [--shard_size_mb 256] [--workers 4] [--prefix shard]
              [--check true] [--limit N] [--answers FILE]   real data -> shards; FORMAT: llava_video,
              videomme, mlvu, longvideobench, lvbench, egoschema, charades, activitynet_captions,
              youcook2, timeviper (docs/data.md)
viper compare recipes/compare/demo.yaml [--overrides ...]
viper analyze knockout|attention --config RECIPE --ckpt_path CKPT --out DIR   information-flow analysis
viper bench   data | data_memory | prefill | train | breakdown ...
viper tokenizer '[SHARDS_OR_ANNOTATIONS,...]' OUT_DIR [--vocab_size 8000]   byte-level BPE
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from jsonargparse import auto_cli


def verbs() -> dict[str, Any]:
    """Verb name -> typed function (or a dict of them); jsonargparse builds the parsers."""
    from lightning_viper.analysis.command import analyze_attention, analyze_knockout
    from lightning_viper.bench.breakdown import bench_breakdown
    from lightning_viper.bench.prefill import bench_prefill
    from lightning_viper.bench.train import bench_train
    from lightning_viper.compare import compare
    from lightning_viper.data.bench import bench_data
    from lightning_viper.data.bench_memory import bench_data_memory
    from lightning_viper.data.pack import pack
    from lightning_viper.data.synth import synth
    from lightning_viper.text.bpe import train_tokenizer

    return {
        "synth": synth,
        "pack": pack,
        "compare": compare,
        "analyze": {"knockout": analyze_knockout, "attention": analyze_attention},
        "tokenizer": train_tokenizer,
        "bench": {
            "data": bench_data,
            "data_memory": bench_data_memory,
            "prefill": bench_prefill,
            "train": bench_train,
            "breakdown": bench_breakdown,
        },
    }


def main(args: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("VIPER_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    from lightning_viper.analysis.command import cli_args  # `viper analyze ... --config RECIPE`

    result = auto_cli(verbs(), args=cli_args(sys.argv[1:] if args is None else args), as_positional=True)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
