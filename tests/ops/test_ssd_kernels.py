"""mamba-ssm / causal-conv1d kernels against the plain-PyTorch twins (GPU machine only)."""

from __future__ import annotations

import pytest
import torch

from lightning_viper.ops import conv, kernels, ssd

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not kernels.mamba_kernels_available(), reason="needs CUDA + mamba-ssm + causal-conv1d"),
]


def _seq_idx(b: int, t: int) -> torch.Tensor:
    seq = torch.zeros(b, t, dtype=torch.long, device="cuda")
    for row in range(b):
        seq[row, : row * 3] = -1
        seq[row, t // 2 + row :] = 7
    return seq


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("t", "chunk"), [(37, 16), (300, 64)])
@pytest.mark.parametrize("packed", [False, True])
def test_scan_kernel_matches_torch(dtype, t, chunk, packed):
    g = torch.Generator(device="cuda").manual_seed(0)
    b, h, p, grp, n = 2, 8, 16, 2, 32
    x = torch.randn(b, t, h, p, device="cuda", generator=g).to(dtype)
    dt = torch.randn(b, t, h, device="cuda", generator=g).to(dtype)
    A = -torch.rand(h, device="cuda", generator=g) * 3
    B = torch.randn(b, t, grp, n, device="cuda", generator=g).to(dtype)
    C = torch.randn(b, t, grp, n, device="cuda", generator=g).to(dtype)
    D = torch.randn(h, device="cuda", generator=g)
    dt_bias = torch.randn(h, device="cuda", generator=g) * 0.3
    h0 = torch.randn(b, h, p, n, device="cuda", generator=g)
    seq = _seq_idx(b, t) if packed else None
    kw = dict(D=D, dt_bias=dt_bias, dt_softplus=True, dt_limit=(0.001, float("inf")), initial_state=h0, seq_idx=seq)
    y_ref, s_ref = ssd.ssd_scan(x, dt, A, B, C, chunk, **kw)
    y, s = kernels.ssd_scan_cuda(x, dt, A, B, C, chunk, **kw)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(y.float(), y_ref.float(), **tol)
    torch.testing.assert_close(s.float(), s_ref.float(), **tol)


def test_step_kernel_matches_torch():
    g = torch.Generator(device="cuda").manual_seed(1)
    b, h, p, grp, n = 3, 8, 16, 2, 32
    x = torch.randn(b, h, p, device="cuda", generator=g)
    dt = torch.randn(b, h, device="cuda", generator=g)
    A = -torch.rand(h, device="cuda", generator=g)
    B, C = torch.randn(b, grp, n, device="cuda", generator=g), torch.randn(b, grp, n, device="cuda", generator=g)
    D, dt_bias = torch.randn(h, device="cuda", generator=g), torch.randn(h, device="cuda", generator=g)
    s_ref = torch.randn(b, h, p, n, device="cuda", generator=g)
    s = s_ref.clone()
    y_ref = ssd.ssd_step(s_ref, x, dt, A, B, C, D, dt_bias, dt_softplus=True)
    y = kernels.ssd_step_cuda(s, x, dt, A, B, C, D, dt_bias, dt_softplus=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(s, s_ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("packed", [False, True])
def test_conv_kernels_match_torch(packed):
    g = torch.Generator(device="cuda").manual_seed(2)
    b, t, c, k = 2, 45, 64, 4
    x = torch.randn(b, t, c, device="cuda", generator=g)
    w, bias = torch.randn(c, k, device="cuda", generator=g), torch.randn(c, device="cuda", generator=g)
    init = torch.randn(b, c, k - 1, device="cuda", generator=g)
    seq = _seq_idx(b, t) if packed else None
    y_ref, f_ref = conv.causal_conv1d(x, w, bias, seq_idx=seq, initial_state=init)
    y, f = kernels.causal_conv1d_cuda(x, w, bias, seq_idx=seq, initial_state=init)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f, f_ref)
    s_ref, s = f_ref.clone(), f_ref.clone()
    step_ref = conv.causal_conv1d_step(x[:, 0], s_ref, w, bias)
    step = kernels.causal_conv1d_step_cuda(x[:, 0], s, w, bias)
    torch.testing.assert_close(step, step_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_ref)


def test_backbone_kernel_path_matches_torch_path():
    from lightning_viper.backbones.presets import tiny_hybrid
    from tests.backbones.test_nemotron_h_helpers import packed_state

    torch.manual_seed(0)
    model = tiny_hybrid(kernels="torch", chunk_size=16).cuda().eval()
    state = packed_state([[20, 9], [30]])
    state = type(state)(**{k: v.cuda() for k, v in vars(state).items()})
    ids = torch.randint(0, model.vocab_size, state.mask.shape, device="cuda")
    with torch.no_grad():
        ref = model.logits(model(model.embed(ids), state).hidden)
        for layer in model.layers:
            if hasattr(layer.mixer, "kernels"):
                layer.mixer.kernels = "cuda"
        got = model.logits(model(model.embed(ids), state).hidden)
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)
