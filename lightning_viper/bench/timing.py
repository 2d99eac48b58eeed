"""Timing and memory measurement on CUDA (events, peak allocator stats) or CPU (wall clock).

``Marks`` (named time points) lives in :mod:`lightning_viper.ops.profiling`, shared with the model."""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from lightning_viper.ops.profiling import Marks

__all__ = ["Marks", "device_info", "free_memory", "median", "peak_gib", "reset_peak", "write_json"]
log = logging.getLogger(__name__)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> dict[str, float | None]:
    """Peak allocated / reserved GiB since :func:`reset_peak` (None on CPU)."""
    if device.type != "cuda":
        return {"peak_alloc_gib": None, "peak_reserved_gib": None}
    return {
        "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def device_info(device: torch.device) -> dict[str, Any]:
    """What ran the benchmark: GPU name/memory/driver (nvidia-smi when present) and versions."""
    import transformers

    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date_utc": datetime.now(UTC).isoformat(),
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }
    try:
        import mamba_ssm

        info["mamba_ssm"] = mamba_ssm.__version__
    except ImportError:
        info["mamba_ssm"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_mem_gib=props.total_memory / 2**30,
            sm_count=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
        try:
            smi = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            info["nvidia_smi"] = f"unavailable: {err}"
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (tmp + rename) so a run killed mid-write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
