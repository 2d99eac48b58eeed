"""Helpers of the Nemotron-H tests (no tests here): a tiny transformers model and hand-made layouts."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import torch

from lightning_viper.sequence import SequenceState, TokenKind

TINY = dict(
    hybrid_override_pattern="M-M*-M*",
    hidden_size=64,
    vocab_size=97,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    mamba_num_heads=8,
    mamba_head_dim=8,
    ssm_state_size=16,
    n_groups=2,
    chunk_size=8,
    intermediate_size=96,
    pad_token_id=0,
    eos_token_id=None,
    bos_token_id=None,
)


HF_MODULE = "transformers.models.nemotron_h.modeling_nemotron_h"


def import_hf_torch_path() -> None:
    """Import transformers' nemotron_h with mamba-ssm / causal-conv1d hidden.

    transformers binds those packages when its module is imported, whenever they import, and then
    calls their CUDA kernels even for CPU tensors. Hidden at that moment, it keeps its PyTorch
    path for the whole process, so the CPU references also work on a machine with the kernels
    (our own ``lightning_viper.ops.kernels`` holds its own references and is unaffected).
    """
    if HF_MODULE in sys.modules:
        return
    roots = ("mamba_ssm", "causal_conv1d")
    saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] in roots}
    hidden = set(saved) | set(roots)
    sys.modules.update(dict.fromkeys(hidden))  # None: "import mamba_ssm[.x]" raises ImportError
    try:
        importlib.import_module(HF_MODULE)
    finally:
        for name in hidden:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def hf_model(seed: int = 0, **changes):  # -> transformers NemotronHForCausalLM
    import_hf_torch_path()
    from transformers import NemotronHConfig, NemotronHForCausalLM

    torch.manual_seed(seed)
    model = NemotronHForCausalLM(NemotronHConfig(**{**TINY, **changes})).eval()
    with torch.no_grad():  # spread the SSM parameters away from their tidy init
        for name, p in model.named_parameters():
            if name.endswith(("dt_bias", "D", "A_log")) or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def packed_state(rows: Sequence[Sequence[int]], length: int | None = None, query_last: bool = True) -> SequenceState:
    """Left-padded state with segments of the given lengths per row (ids 0..S-1 in row order).

    All tokens are TEXT except the last token of every segment, which is INSTRUCTION."""
    b = len(rows)
    t = length if length is not None else max(sum(r) for r in rows)
    mask = torch.zeros(b, t, dtype=torch.bool)
    segment = torch.full((b, t), -1, dtype=torch.long)
    position = torch.zeros(b, t, dtype=torch.long)
    kind = torch.full((b, t), int(TokenKind.PAD), dtype=torch.long)
    seg_rows: list[int] = []
    for r, lengths in enumerate(rows):
        col = t - sum(lengths)
        for n in lengths:
            sid = len(seg_rows)
            seg_rows.append(r)
            mask[r, col : col + n] = True
            segment[r, col : col + n] = sid
            position[r, col : col + n] = torch.arange(n)
            kind[r, col : col + n] = int(TokenKind.TEXT)
            if query_last:
                kind[r, col + n - 1] = int(TokenKind.INSTRUCTION)
            col += n
    origin = torch.where(mask, torch.arange(t).expand(b, t), torch.full((b, t), -1))
    return SequenceState(
        mask=mask,
        kind=kind,
        segment=segment,
        position=position,
        origin=origin,
        segment_row=torch.tensor(seg_rows, dtype=torch.long),
        num_vision_orig=torch.zeros(len(seg_rows), dtype=torch.long),
    )


def place(tokens: Sequence[Sequence[int]], state: SequenceState) -> torch.Tensor:
    """(B, T) ids with each row's segments' tokens (concatenated) written on its real columns."""
    ids = torch.zeros(state.mask.shape, dtype=torch.long)
    for r, row in enumerate(tokens):
        ids[r, state.mask[r]] = torch.tensor(row, dtype=torch.long)
    return ids
