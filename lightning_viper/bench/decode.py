"""``bench_decode``: greedy decoding speed after a long prompt, hybrid vs Transformer backbone.

Each backbone prefills ``input_tokens`` random token ids (batch 1, no compression) through its
generation cache, then decodes ``new_tokens`` tokens with :func:`~lightning_viper.generation.greedy_generate`,
the path ``VideoLM.generate`` runs (eos never matches, so every step runs). Decode tokens/s =
(new_tokens - 1) / (time from the first token to the last), CUDA events on a GPU.

Each family decodes eagerly (``graphs: false``, dynamic KV caches) and, by default on a GPU, with
the decode step captured once as a CUDA graph and replayed per token (``graphs: true``, static
caches). A graph row's figures include its one eager warm-up step and the capture
(``capture_ms``); ``replay_ms_per_token`` is the rate after them.

Backbones (random weights): ``"paper"`` = Nemotron-Nano-9B-v2 (hybrid, 8.9B) vs Qwen2.5-7B
(Transformer, 7.6B), the paper's pair; ``"tiny"`` = the CPU test shapes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.nemotron_h_presets import nemotron_nano_9b_v2, tiny_hybrid
from lightning_viper.backbones.qwen2_presets import qwen2_5_7b, tiny_qwen2
from lightning_viper.bench.models import DType, building_on
from lightning_viper.bench.prefill import _device, _guarded
from lightning_viper.bench.timing import Marks, device_info, free_memory, median, peak_gib, reset_peak, write_json
from lightning_viper.generation import greedy_generate
from lightning_viper.ops.kernels import KernelChoice, resolve_kernels
from lightning_viper.sequence import SequenceState, TokenKind

log = logging.getLogger(__name__)

Family = Literal["hybrid", "qwen2"]


def text_state(length: int, device: torch.device) -> SequenceState:
    """The state of one unpadded text row of ``length`` tokens (one segment, no vision)."""
    pos = torch.arange(length, device=device).unsqueeze(0)  # (1, T)
    return SequenceState(
        mask=torch.ones(1, length, dtype=torch.bool, device=device),
        kind=torch.full((1, length), int(TokenKind.TEXT), dtype=torch.long, device=device),
        segment=torch.zeros(1, length, dtype=torch.long, device=device),
        position=pos,
        origin=pos.clone(),
        segment_row=torch.zeros(1, dtype=torch.long, device=device),
        num_vision_orig=torch.zeros(1, dtype=torch.long, device=device),
    )


def decode_backbone(family: Family, size: Literal["paper", "tiny"], kernels: KernelChoice) -> Backbone:
    if family == "hybrid":
        return nemotron_nano_9b_v2(kernels=kernels) if size == "paper" else tiny_hybrid(kernels=kernels)
    if family == "qwen2":
        return qwen2_5_7b() if size == "paper" else tiny_qwen2()
    raise ValueError(f"unknown family {family!r}: use 'hybrid' or 'qwen2'")


@torch.no_grad()
def _decode_runs(
    backbone: Backbone, input_tokens: int, new_tokens: int, device: torch.device, repeats: int, graphs: bool
) -> dict[str, Any]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, backbone.vocab_size, (1, input_tokens), generator=gen).to(device)
    state = text_state(input_tokens, device)
    hidden = backbone.embed(ids)  # (1, T, D)
    # warm-up: kernels, allocator, cache growth (and one capture)
    greedy_generate(backbone, hidden, state, [], new_tokens, -1, 0, graphs=graphs)
    reset_peak(device)
    prefill_ms, decode_ms, capture_ms = [], [], []
    for _ in range(max(1, repeats)):
        marks = Marks(device)
        marks.mark("start")
        greedy_generate(backbone, hidden, state, [], new_tokens, -1, 0, marks, graphs=graphs)
        t = marks.elapsed_ms()
        prefill_ms.append(t["first_token"])
        decode_ms.append(t["decoded"] - t["first_token"])
        if "captured" in t:
            capture_ms.append(t["captured"] - t["first_token"])
    steps = new_tokens - 1
    row: dict[str, Any] = {
        "graphs_captured": bool(capture_ms),
        "prefill_ms": median(prefill_ms),
        "decode_ms": median(decode_ms),
        "decode_runs_ms": decode_ms,
        "ms_per_token": median(decode_ms) / steps,
        "decode_tokens_per_s": steps / (median(decode_ms) / 1000.0),
        **peak_gib(device),
    }
    if capture_ms and steps > 1:  # the first step is the warm-up; the other steps - 1 are replays
        replays = [d - c for d, c in zip(decode_ms, capture_ms, strict=True)]
        row.update(capture_ms=median(capture_ms), replay_ms_per_token=median(replays) / (steps - 1))
    return row


def bench_decode(
    input_tokens: int = 32768,
    new_tokens: int = 128,
    families: list[Family] | None = None,
    size: Literal["paper", "tiny"] = "paper",
    repeats: int = 3,
    graphs: list[bool] | None = None,
    kernels: KernelChoice = "auto",
    dtype: DType = "bfloat16",
    device: str | None = None,
    out_dir: str = "runs/bench",
    tag: str = "decode",
) -> dict[str, Any]:
    """Decode speed (tokens/s) after a long prompt, per backbone family.

    One greedy decode after an ``input_tokens`` prompt per family and decode mode (see the module
    doc); writes ``{out_dir}/{tag}.json`` with one row per family and mode (``graphs``) and the
    hybrid/qwen2 ratios. ``graphs``: the modes to run, eager (false) and CUDA-graph (true)
    decoding; default both on a GPU, eager only elsewhere (where graphs fall back to eager)."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be at least 2 (the rate is measured after the first), got {new_tokens}")
    dev = _device(device)
    names: list[Family] = list(families or ["hybrid", "qwen2"])
    modes = list(graphs) if graphs is not None else ([False, True] if dev.type == "cuda" else [False])
    results: dict[str, Any] = {
        "device": device_info(dev),
        "config": {
            "input_tokens": input_tokens,
            "new_tokens": new_tokens,
            "families": names,
            "size": size,
            "repeats": repeats,
            "graphs": modes,
            "kernels": kernels,
            "kernels_resolved": resolve_kernels(kernels, dev),
            "dtype": dtype,
        },
        "rows": [],
    }
    out = Path(out_dir) / f"{tag}.json"
    for family in names:
        with building_on(dev, getattr(torch, dtype)):
            backbone = decode_backbone(family, size, kernels).eval()
        params = backbone.param_count()
        for mode in modes:
            timing, oom = _guarded(_decode_runs, backbone, input_tokens, new_tokens, dev, repeats, mode)
            row: dict[str, Any] = {"family": family, "graphs": mode, "params": params}
            row.update({"status": "ok", **timing} if timing is not None else {"status": "oom", "error": oom})
            results["rows"].append(row)
            log.info("decode %s", {k: v for k, v in row.items() if k != "decode_runs_ms"})
            free_memory()
            write_json(out, results)
        del backbone
        free_memory()
    for mode, key in ((False, "hybrid_over_qwen2"), (True, "hybrid_over_qwen2_graphs")):
        rates = {r["family"]: r.get("decode_tokens_per_s") for r in results["rows"] if r["graphs"] == mode}
        if rates.get("hybrid") and rates.get("qwen2"):
            results[key] = rates["hybrid"] / rates["qwen2"]
    write_json(out, results)
    return results
