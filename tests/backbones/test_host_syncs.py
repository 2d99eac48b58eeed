"""Host reads of device values (each one a sync on a GPU) in the prefill and decode hot paths.

On the CPU nothing syncs, so the tests count the calls that would: ``Tensor.tolist``, ``item``,
``bool()``, ``int()``, ``float()`` and ``__index__``, through wrappers installed on the class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from lightning_viper.backbones.base import Backbone
from lightning_viper.backbones.nemotron_h_presets import tiny_hybrid
from lightning_viper.backbones.qwen2_presets import tiny_qwen2
from lightning_viper.compression.transv import TransV
from tests.backbones.conftest import layout_state

READS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__")

BUILDERS: dict[str, Callable[..., Backbone]] = {
    "hybrid": lambda **kw: tiny_hybrid(kernels="torch", **kw),
    "qwen2": tiny_qwen2,
}


@contextmanager
def host_reads() -> Iterator[list[str]]:
    """Collects the name of every host read of a tensor value made inside the block."""
    seen: list[str] = []
    own = {name: torch.Tensor.__dict__.get(name) for name in READS}  # None: inherited from TensorBase
    inherited = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            seen.append(name)
            return read(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, counting(name, inherited[name]))
    try:
        yield seen
    finally:
        for name, method in own.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


def test_the_counter_sees_every_kind_of_read() -> None:
    x = torch.tensor([1.5])
    with host_reads() as seen:
        x.tolist(), x.item(), bool(x), int(x), float(x), [0, 1][torch.tensor(1)]
    assert seen == list(READS)
    with host_reads() as seen:
        (x * 2).sum()
    assert seen == []


def prompt(backbone: Backbone, rows: list[list[int]]) -> tuple[torch.Tensor, Any]:
    state = layout_state(rows, vision=6)
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size) * state.mask[..., None]
    return hidden, state


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDERS))
@torch.no_grad()
def test_decode_steps_read_nothing_on_the_host(name: str, static: bool) -> None:
    backbone = BUILDERS[name]().eval()
    hidden, state = prompt(backbone, [[14], [9], [12]])
    cache = backbone.new_cache(3, state.length + 4 if static else None)
    backbone(hidden, state, cache=cache)
    ids = torch.tensor([5, 6, 7])
    for _ in range(3):
        with host_reads() as seen:
            ids = backbone.logits(backbone.decode(backbone.embed(ids[:, None]), cache)[:, -1]).argmax(-1)
        assert seen == [], f"{name} decode step read {seen} from the device"


@pytest.mark.parametrize("prefill_chunk", [None, 5])
@pytest.mark.parametrize("name", sorted(BUILDERS))
@torch.no_grad()
def test_prefill_reads_the_layout_once_not_per_attention_layer(name: str, prefill_chunk: int | None) -> None:
    backbone = BUILDERS[name](prefill_chunk=prefill_chunk).eval()
    assert len(backbone.attention_layers) >= 2
    hidden, state = prompt(backbone, [[14], [9], [12]])
    with host_reads() as seen:
        backbone(hidden, state, cache=backbone.new_cache(3))
    assert seen == ["tolist"], seen


@pytest.mark.parametrize("name", sorted(BUILDERS))
@torch.no_grad()
def test_stage_records_stay_on_the_device_until_read(name: str) -> None:
    backbone = BUILDERS[name]().eval()
    stage = TransV(backbone.attention_layers[0], 0.5)
    stage.bind(backbone)
    hidden, state = prompt(backbone, [[14], [9], [12]])
    with host_reads() as with_stage:
        out = backbone(hidden, state, stages=[stage])
    with host_reads() as without:
        backbone(hidden, state)
    record = out.stages[0]
    assert isinstance(record.before, torch.Tensor) and isinstance(record.after, torch.Tensor)
    assert (record.vision_before, record.vision_after) == (18, 9)  # 6 vision tokens per row, half kept
    # the layout once per state the layers see (before and after the stage), none per layer
    assert without == ["tolist"] and with_stage.count("tolist") == (1 if stage.layer == 0 else 2), with_stage
