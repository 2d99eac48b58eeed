"""CUDA runs of the stages and ToMe, checked against the same computation on CPU."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.compression import TokenDrop, TransV
from lightning_viper.projectors import tome_merge
from lightning_viper.sequence import SequenceState

from .conftest import FakeBackbone, make_state
from .test_real_backbones import build

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def to(state: SequenceState, device: str) -> SequenceState:
    return SequenceState(**{k: getattr(state, k).to(device) for k in state.__dataclass_fields__})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stages_on_cuda_match_cpu(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    backbone = FakeBackbone()
    state = make_state([[(2, 7, 3, 2)], [(1, 10, 2, 0)], [(3, 5, 1, 1), (2, 9, 4, 0)]])
    backbone.token_scores = torch.rand(state.batch_size, state.length)
    hidden = torch.randn(state.batch_size, state.length, 16) * state.mask[..., None]
    for stage in (TokenDrop(1, 0.4, "attention"), TransV(1, 0.3, "uniform")):
        stage.bind(backbone)
        if isinstance(stage, TransV):
            with torch.no_grad():
                stage.alpha.fill_(0.9)
        ref, ref_state = stage(hidden, state, backbone)
        backbone.cuda().to(dtype)
        backbone.token_scores = backbone.token_scores.cuda()
        stage.cuda().to(dtype)
        out, new = stage(hidden.cuda().to(dtype), to(state, "cuda"), backbone)
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(out.float().cpu(), ref, rtol=tol, atol=tol)
        assert torch.equal(new.origin.cpu(), ref_state.origin)
        backbone.cpu().float()
        backbone.token_scores = backbone.token_scores.cpu()


def test_tome_on_cuda_matches_cpu() -> None:
    x = torch.randn(64, 729, 64, generator=torch.Generator().manual_seed(0))
    ref, ref_sizes = tome_merge(x, None, 16)
    out, sizes = tome_merge(x.cuda(), None, 16)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sizes.cpu(), ref_sizes)


@pytest.mark.parametrize("name", ["hybrid", "qwen2"])
@torch.no_grad()
def test_real_backbone_schedule_on_cuda(name: str) -> None:
    backbone, stages = build(name)
    state = make_state([[(2, 7, 3, 2)], [(1, 10, 2, 0)], [(3, 5, 1, 1), (2, 9, 4, 0)]])
    hidden = torch.randn(state.batch_size, state.length, backbone.hidden_size) * state.mask[..., None]
    ref = backbone(hidden, state, stages=stages)
    backbone.cuda()
    for stage in stages:
        stage.cuda()
    out = backbone(hidden.cuda(), to(state, "cuda"), stages=stages)
    assert torch.equal(out.state.origin.cpu(), ref.state.origin)
    torch.testing.assert_close(out.hidden.cpu(), ref.hidden, rtol=2e-3, atol=2e-3)
