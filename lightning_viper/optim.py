"""AdamW with one parameter group per top-level module and a cosine schedule with warmup."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_cosine_schedule_with_warmup


def param_groups(
    modules: Mapping[str, nn.Module], lr: float, module_lr: Mapping[str, float], weight_decay: float
) -> list[dict]:
    """One group per named module holding trainable parameters; norms, biases and gates get
    no weight decay. ``module_lr`` overrides ``lr`` per module name (e.g. compression: 5e-5)."""
    unknown = set(module_lr) - set(modules)
    if unknown:
        raise ValueError(f"module_lr names {sorted(unknown)}; valid module names are {sorted(modules)}")
    groups: list[dict] = []
    for name, module in modules.items():
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for pname, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or pname.endswith("bias") else decay).append(p)
        group_lr = module_lr.get(name, lr)
        if decay:
            groups.append({"name": name, "params": decay, "lr": group_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"name": f"{name}/no_decay", "params": no_decay, "lr": group_lr, "weight_decay": 0.0})
    if not groups:
        raise ValueError("no trainable parameters: check `trainable` in the model's init_args")
    return groups


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> LambdaLR:
    """Linear warmup from 0 over ``warmup_ratio * total_steps`` steps, then cosine decay to 0 at
    ``total_steps`` (transformers' ``get_cosine_schedule_with_warmup``)."""
    warmup = max(1, round(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0
    return get_cosine_schedule_with_warmup(optimizer, warmup, max(total_steps, warmup + 1))
