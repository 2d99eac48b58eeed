"""mamba-ssm / causal-conv1d kernels against the plain-PyTorch twins run on the CPU (GPU machine only).

The scan kernel multiplies in TF32 (fp32 inputs) or bf16, so its outputs are compared by the
largest error relative to the largest reference value: a wrong state carry or a missed reset at
a packed boundary moves single outputs by about their own size, far above these tolerances.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor

from lightning_viper.ops import conv, kernels, pieces, ssd
from lightning_viper.ops.pieces import in_pieces, reach

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not kernels.mamba_kernels_available(), reason="needs CUDA + mamba-ssm + causal-conv1d"),
]

SCAN_TOL = {torch.float32: 5e-3, torch.bfloat16: 3e-2}  # max |err| / max |ref|


def scaled_error(got: Tensor, ref: Tensor) -> float:
    """max |got - ref| / max |ref| (both moved to float32 on the CPU)."""
    got, ref = got.detach().float().cpu(), ref.detach().float().cpu()
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _seq_idx(b: int, t: int) -> Tensor:
    """Left padding (-1), then two packed runs per row with labels 0 and 7."""
    seq = torch.zeros(b, t, dtype=torch.long)
    for row in range(b):
        seq[row, : row * 3] = -1
        seq[row, t // 2 + row :] = 7
    return seq


def _scan_inputs(t: int, packed: bool, seed: int = 0) -> dict[str, Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    b, h, p, grp, n = 2, 8, 16, 2, 32
    return dict(
        x=torch.randn(b, t, h, p, generator=g),
        dt=torch.randn(b, t, h, generator=g),
        A=-torch.rand(h, generator=g) * 3,
        B=torch.randn(b, t, grp, n, generator=g),
        C=torch.randn(b, t, grp, n, generator=g),
        D=torch.randn(h, generator=g),
        dt_bias=torch.randn(h, generator=g) * 0.3,
        initial_state=torch.randn(b, h, p, n, generator=g),
        seq_idx=_seq_idx(b, t) if packed else None,
    )


def _on_cuda(inputs: dict[str, Tensor | None], dtype: torch.dtype) -> dict[str, Tensor | None]:
    """x, dt, B, C in ``dtype`` (what a bf16 model feeds the kernel); parameters stay float32."""
    low = ("x", "dt", "B", "C")
    return {k: None if v is None else v.cuda().to(dtype) if k in low else v.cuda() for k, v in inputs.items()}


def _quantized(inputs: dict[str, Tensor | None], dtype: torch.dtype) -> dict[str, Tensor | None]:
    """The CPU reference sees the same rounded x, dt, B, C as the kernel."""
    return {k: v.to(dtype).float() if k in ("x", "dt", "B", "C") and v is not None else v for k, v in inputs.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("t", "chunk"), [(37, 16), (300, 64)])
@pytest.mark.parametrize("packed", [False, True])
def test_scan_kernel_matches_torch(dtype, t, chunk, packed):
    inputs = _scan_inputs(t, packed)
    kw = dict(dt_softplus=True, dt_limit=(0.001, float("inf")))
    y_ref, s_ref = ssd.ssd_scan(chunk_size=chunk, **_quantized(inputs, dtype), **kw)
    y, s = kernels.ssd_scan_cuda(chunk_size=chunk, **_on_cuda(inputs, dtype), **kw)
    assert y.dtype == dtype and s.dtype == torch.float32
    errs = scaled_error(y, y_ref), scaled_error(s, s_ref)
    log.info("scan %s t=%d chunk=%d packed=%s: y err %.2e, state err %.2e", dtype, t, chunk, packed, *errs)
    assert max(errs) < SCAN_TOL[dtype], f"scaled errors (y, state) {errs} over {SCAN_TOL[dtype]}"


def test_scan_reference_detects_a_missed_reset():
    """The tolerance is meaningful: ignoring the packed boundaries breaks it by a wide margin."""
    inputs = _scan_inputs(300, packed=True)
    y_ref, _ = ssd.ssd_scan(chunk_size=64, dt_softplus=True, **inputs)
    unpacked = {**_on_cuda(inputs, torch.float32), "seq_idx": None}
    y, _ = kernels.ssd_scan_cuda(chunk_size=64, dt_softplus=True, **unpacked)
    assert scaled_error(y, y_ref) > 20 * SCAN_TOL[torch.float32]


@pytest.mark.parametrize("packed", [False, True])
def test_in_pieces_with_the_kernel_matches_one_call(packed):
    inputs = _scan_inputs(300, packed, seed=4)
    kw = dict(chunk_size=16, dt_softplus=True)
    y_ref, s_ref = ssd.ssd_scan(**inputs, **kw)
    y, s = in_pieces(kernels.ssd_scan_cuda, 64, ("x", "dt", "B", "C"), **_on_cuda(inputs, torch.float32), **kw)
    errs = scaled_error(y, y_ref), scaled_error(s, s_ref)
    log.info("scan in pieces packed=%s: y err %.2e, state err %.2e", packed, *errs)
    assert max(errs) < SCAN_TOL[torch.float32]


def test_step_kernel_matches_torch():
    g = torch.Generator().manual_seed(1)
    b, h, p, grp, n = 3, 8, 16, 2, 32
    x, dt = torch.randn(b, h, p, generator=g), torch.randn(b, h, generator=g)
    A = -torch.rand(h, generator=g)
    B, C = torch.randn(b, grp, n, generator=g), torch.randn(b, grp, n, generator=g)
    D, dt_bias = torch.randn(h, generator=g), torch.randn(h, generator=g)
    s_ref = torch.randn(b, h, p, n, generator=g)
    s = s_ref.cuda()
    y_ref = ssd.ssd_step(s_ref, x, dt, A, B, C, D, dt_bias, dt_softplus=True)
    cuda = [v.cuda() for v in (x, dt, A, B, C, D, dt_bias)]
    y = kernels.ssd_step_cuda(s, *cuda, dt_softplus=True)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.cpu(), s_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("packed", [False, True])
def test_conv_kernels_match_torch(packed):
    g = torch.Generator().manual_seed(2)
    b, t, c, k = 2, 45, 64, 4
    x = torch.randn(b, t, c, generator=g)
    w, bias = torch.randn(c, k, generator=g), torch.randn(c, generator=g)
    init = torch.randn(b, c, k - 1, generator=g)
    seq = _seq_idx(b, t) if packed else None
    y_ref, f_ref = conv.causal_conv1d(x, w, bias, seq_idx=seq, initial_state=init)
    y, f = kernels.causal_conv1d_cuda(
        x.cuda(), w.cuda(), bias.cuda(), seq_idx=None if seq is None else seq.cuda(), initial_state=init.cuda()
    )
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f.cpu(), f_ref)
    s_ref, s = f_ref.clone(), f_ref.cuda()
    step_ref = conv.causal_conv1d_step(x[:, 0], s_ref, w, bias)
    step = kernels.causal_conv1d_step_cuda(x[:, 0].cuda(), s, w.cuda(), bias.cuda())
    torch.testing.assert_close(step.cpu(), step_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.cpu(), s_ref)


def test_conv_kernel_in_pieces_matches_torch():
    g = torch.Generator().manual_seed(3)
    b, t, c, k = 2, 45, 64, 4
    x, w, bias = torch.randn(b, t, c, generator=g), torch.randn(c, k, generator=g), torch.randn(c, generator=g)
    init, seq = torch.randn(b, c, k - 1, generator=g), _seq_idx(b, t)
    y_ref, f_ref = conv.causal_conv1d(x, w, bias, seq_idx=seq, initial_state=init)
    kw = dict(x=x.cuda(), weight=w.cuda(), bias=bias.cuda(), seq_idx=seq.cuda(), initial_state=init.cuda())
    y, f = in_pieces(kernels.causal_conv1d_cuda, 10, ("x",), **kw)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f.cpu(), f_ref)


@pytest.mark.parametrize(
    ("dtype", "index_limit"), [(torch.float32, None), (torch.bfloat16, None), (torch.float32, 2048)]
)
def test_gated_rmsnorm_kernel_matches_torch_with_gradients(monkeypatch, dtype, index_limit):
    from lightning_viper.backbones.mamba2 import GatedRMSNorm

    if index_limit is not None:  # 32 rows of 64 per kernel call: 150 rows in 5 calls
        monkeypatch.setattr(pieces, "INT32_LIMIT", index_limit)

    g = torch.Generator().manual_seed(5)
    x, gate = torch.randn(3, 50, 64, generator=g), torch.randn(3, 50, 64, generator=g)
    norm = GatedRMSNorm(64, group_size=16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64, generator=g) + 0.5)
    xr, gr = x.clone().requires_grad_(), gate.clone().requires_grad_()
    ref = norm(xr, gr)  # CPU, float32
    ref.square().sum().backward()
    fused = GatedRMSNorm(64, group_size=16, eps=1e-5).cuda().to(dtype)
    with torch.no_grad():
        fused.weight.copy_(norm.weight)
    xc, gc = x.cuda().to(dtype).requires_grad_(), gate.cuda().to(dtype).requires_grad_()
    out = fused(xc, gc, fused=True)
    out.float().square().sum().backward()
    tol = SCAN_TOL[dtype]
    errs = [scaled_error(out, ref), scaled_error(xc.grad, xr.grad), scaled_error(gc.grad, gr.grad)]
    log.info("gated rmsnorm %s: out, dx, dgate errors %s", dtype, [f"{e:.1e}" for e in errs])
    assert out.dtype == dtype and max(errs) < 2 * tol, errs


@pytest.mark.parametrize(("t", "with_state"), [(45, False), (45, True), (2, True)])
def test_conv_kernel_reads_a_projection_slice_in_place(t, with_state):
    """One run per row (no labels): the kernel reads a column slice of a wider projection as it
    lies and takes / returns the state itself; 2 tokens (< K-1) go the prepending way."""
    g = torch.Generator().manual_seed(4)
    b, c, k, wide = 2, 64, 4, 104
    proj = torch.randn(b, t, wide, generator=g)
    x = proj[:, :, 24:88]  # (B, T, C) column slice, time stride 104
    w, bias = torch.randn(c, k, generator=g), torch.randn(c, generator=g)
    init = torch.randn(b, c, k - 1, generator=g) if with_state else None
    y_ref, f_ref = conv.causal_conv1d(x, w, bias, initial_state=init)
    x_cuda = proj.cuda()[:, :, 24:88]
    assert x_cuda.stride(1) == wide and not x_cuda.is_contiguous()
    y, f = kernels.causal_conv1d_cuda(
        x_cuda, w.cuda(), bias.cuda(), initial_state=None if init is None else init.cuda()
    )
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f.cpu(), f_ref)
    assert f.shape == (b, c, k - 1) and f.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rmsnorm_matches_torch_with_gradients(monkeypatch, dtype):
    """mamba-ssm's RMSNorm in the backbone's norm (weight in float32) against the PyTorch form,
    outputs and gradients, with calls split under a lowered index limit (150 rows in 5 calls)."""
    from lightning_viper.backbones.norm import RMSNorm

    monkeypatch.setattr(pieces, "INT32_LIMIT", 32 * 64)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 50, 64, generator=g) * 3
    ref_norm = RMSNorm(64, 1e-5, weight_in_float32=True)
    with torch.no_grad():
        ref_norm.weight.copy_(torch.rand(64, generator=g) + 0.5)
    xr = x.clone().requires_grad_()
    ref = ref_norm(xr)
    ref.square().sum().backward()
    norm = RMSNorm(64, 1e-5, weight_in_float32=True, kernels="cuda").cuda()
    with torch.no_grad():
        norm.weight.copy_(ref_norm.weight)
    assert norm._fused(x.cuda())
    xc = x.cuda().to(dtype).requires_grad_()
    out = norm(xc)
    out.float().square().sum().backward()
    errs = [
        scaled_error(out, ref),
        scaled_error(xc.grad, xr.grad),
        scaled_error(norm.weight.grad, ref_norm.weight.grad),
    ]
    log.info("rmsnorm %s: out, dx, dweight errors %s", dtype, [f"{e:.1e}" for e in errs])
    assert out.dtype == dtype and max(errs) < SCAN_TOL[dtype], errs


@torch.no_grad()
def test_scan_of_projection_slices_past_32_bit_reach_matches_compact_pieces():
    """The 9B mixer's widths, one row of 100,352 tokens, x / dt / B / C as column slices of one
    in_proj-wide tensor: each reaches ~2.27e9 elements, past the kernels' int32 offsets (they read
    wrapped addresses, then fault, when handed such a slice). Equal to the scan of compact copies
    in two pieces, each well inside the limit."""
    t, heads, p, groups, n, wide = 100_352, 128, 80, 8, 128, 22_656
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    proj = torch.randn(1, t, wide, device=dev, dtype=torch.bfloat16, generator=g)  # (1, T, in_proj width)
    inner, gn = heads * p, groups * n
    x = proj[:, :, :inner].unflatten(-1, (heads, p))
    b = proj[:, :, inner : inner + gn].unflatten(-1, (groups, n))
    c = proj[:, :, inner + gn : inner + 2 * gn].unflatten(-1, (groups, n))
    dt = proj[:, :, -heads:]
    assert min(reach(v) for v in (x, b, c, dt)) > pieces.INT32_LIMIT
    params = dict(
        A=-torch.rand(heads, device=dev, generator=g) * 3,
        chunk_size=256,
        D=torch.randn(heads, device=dev, generator=g),
        dt_bias=torch.randn(heads, device=dev, generator=g) * 0.3,
        dt_softplus=True,
    )
    y, final = kernels.ssd_scan_cuda(x=x, dt=dt, B=b, C=c, **params)
    compact = {k: v.contiguous() for k, v in dict(x=x, dt=dt, B=b, C=c).items()}
    del proj, x, b, c, dt
    y_ref, final_ref = in_pieces(kernels.ssd_scan_cuda, t // 2, ("x", "dt", "B", "C"), **compact, **params)
    errs = scaled_error(y, y_ref), scaled_error(final, final_ref)
    log.info("scan over slices past int32 reach: y, final errors %.1e %.1e", *errs)
    assert max(errs) < SCAN_TOL[torch.bfloat16], errs
