"""Mamba-2 mixer of the hybrid backbone (parameter names follow transformers' NemotronH).

x (B, T, D) -> in_proj -> [z | xBC | dt]; xBC -> depthwise causal conv + SiLU -> [x | B | C];
SSD scan over heads; gated RMSNorm with z (per group); out_proj. Padding inputs are zeroed and
the conv and SSM states restart at every segment boundary (padding counts as its own segment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_viper.backbones.cache import MambaLayerCache
from lightning_viper.ops import conv as torch_conv
from lightning_viper.ops import kernels
from lightning_viper.ops import ssd as torch_ssd
from lightning_viper.ops.attention import RowLayout
from lightning_viper.ops.kernels import KernelChoice
from lightning_viper.ops.pieces import in_pieces, map_rows, tokens_per_piece


class GatedRMSNorm(nn.Module):
    """RMSNorm of ``x * silu(gate)`` over groups of ``group_size`` channels, then a weight."""

    def __init__(self, size: int, group_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: Tensor, gate: Tensor, fused: bool = False) -> Tensor:
        """x, gate (..., size) -> (..., size) in x's dtype. ``fused``: mamba-ssm's Triton kernel
        (CUDA); otherwise PyTorch, its float32 work in row pieces when autograd is off."""
        if fused:
            return kernels.gated_rmsnorm_cuda(x, gate, self.weight, self.eps, self.group_size)
        return map_rows(self._norm, x, gate)

    def _norm(self, x: Tensor, gate: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float() * nn.functional.silu(gate.float())
        g = h.view(*h.shape[:-1], -1, self.group_size)  # (..., groups, group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.view(h.shape).to(dtype)


@dataclass
class SSDInputs:
    """The inputs of one Mamba-2 layer's SSD scan after in_proj, conv and SiLU (read by the analysis)."""

    x: Tensor  # (B, T, H, P), zero on padding
    dt: Tensor  # (B, T, H) float32 time steps Δ: after dt_bias, softplus and the clamp
    A: Tensor  # (H,) float32 decay rates (negative)
    B: Tensor  # (B, T, G, N)
    C: Tensor  # (B, T, G, N)
    D: Tensor  # (H,) skip weights
    z: Tensor  # (B, T, inner) gate of the output norm


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer; ``forward(x, mask, segment, cache)`` for sequences, ``step`` for decoding."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        state_size: int,
        n_groups: int,
        conv_kernel: int,
        chunk_size: int,
        eps: float,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        time_step_limit: tuple[float, float] = (0.0, math.inf),
        time_step_range: tuple[float, float, float] = (0.001, 0.1, 1e-4),
        kernels: KernelChoice = "auto",
    ) -> None:
        super().__init__()
        if num_heads % n_groups:
            raise ValueError(f"mamba_num_heads ({num_heads}) must be a multiple of n_groups ({n_groups})")
        self.num_heads, self.head_dim, self.state_size, self.n_groups = num_heads, head_dim, state_size, n_groups
        self.inner = num_heads * head_dim
        self.conv_dim = self.inner + 2 * n_groups * state_size
        self.chunk_size = chunk_size
        self.time_step_limit = time_step_limit
        self.time_step_range = time_step_range
        self.kernels: KernelChoice = kernels
        self.in_proj = nn.Linear(hidden_size, self.inner + self.conv_dim + num_heads, bias=use_bias)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim, padding=conv_kernel - 1, bias=use_conv_bias
        )
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.D = nn.Parameter(torch.empty(num_heads))
        self.norm = GatedRMSNorm(self.inner, self.inner // n_groups, eps)
        self.out_proj = nn.Linear(self.inner, hidden_size, bias=use_bias)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """A = -(1..H), D = 1, dt_bias = softplus^-1 of steps log-uniform in [dt_min, dt_max]."""
        if self.A_log.device.type == "meta":
            return
        self.A_log.copy_(torch.log(torch.arange(1, self.num_heads + 1, dtype=torch.float32)))
        self.D.fill_(1.0)
        lo, hi, floor = self.time_step_range
        dt = torch.exp(torch.rand(self.num_heads) * (math.log(hi) - math.log(lo)) + math.log(lo)).clamp(min=floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def new_cache(self) -> MambaLayerCache:
        return MambaLayerCache()

    def _use_cuda(self, x: Tensor) -> bool:
        return kernels.resolve_kernels(self.kernels, x.device) == "cuda"

    def _split_conv_out(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gn = self.n_groups * self.state_size
        xs, b, c = xbc.split([self.inner, gn, gn], dim=-1)
        return xs, b, c

    def _project(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> keep (B, T, 1), z (B, T, inner), xBC (B, T, conv_dim), dt (B, T, H)."""
        keep = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        z, xbc, dt = self.in_proj(x * keep).split([self.inner, self.conv_dim, self.num_heads], dim=-1)
        return keep, z, xbc, dt

    def _conv(
        self, xbc: Tensor, segment: Tensor | None, initial_state: Tensor | None, cuda: bool
    ) -> tuple[Tensor, Tensor]:
        """Depthwise causal conv + SiLU of xBC (B, T, conv_dim) -> (B, T, conv_dim) and the final
        conv state; ``segment`` None: every row is one run."""
        conv = kernels.causal_conv1d_cuda if cuda else torch_conv.causal_conv1d
        weight = self.conv1d.weight.squeeze(1)  # (C, K)
        # the CUDA kernels index with 32-bit integers: long calls run in pieces (state carried),
        # sized by where xbc lies (a column slice of in_proj reaches its full width per token)
        conv_limit = tokens_per_piece(xbc) if cuda else xbc.shape[1]
        out: tuple[Tensor, Tensor] = in_pieces(
            conv,
            conv_limit,
            ("x",),
            x=xbc,
            weight=weight,
            bias=self.conv1d.bias,
            seq_idx=segment,
            initial_state=initial_state,
        )
        return out

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        segment: Tensor,
        cache: MambaLayerCache | None = None,
        position: Tensor | None = None,
        layout: RowLayout | None = None,
    ) -> Tensor:
        """x (B, T, D), mask (B, T) bool, segment (B, T) long -> (B, T, D). Fills ``cache``.

        ``layout`` (host-side facts of the keys ending at these T columns, or None): when every
        row's last T columns are real tokens of one segment, the masks and run labels change
        nothing, so they are skipped (no mask products, no run labels; the kernels read the
        projection's column slices in place). ``position`` is unused: the scan carries order."""
        bsz, t, _ = x.shape
        cuda = self._use_cuda(x)
        whole = layout is not None and min(layout.lengths, default=0) >= t
        if whole:
            keep, seg = None, None
            z, xbc, dt = self.in_proj(x).split([self.inner, self.conv_dim, self.num_heads], dim=-1)
        else:
            seg = segment
            keep, z, xbc, dt = self._project(x, mask)
        conv_init = ssm_init = None
        if cache is not None:
            cache.reset_rows(segment[:, 0])
            conv_init, ssm_init = cache.conv_state, cache.ssm_state
        xbc, conv_final = self._conv(xbc, seg, conv_init, cuda)
        xs, b, c = self._split_conv_out(xbc if keep is None else xbc * keep)  # (B, T, inner), (B, T, G*N) x2
        xs = xs.reshape(bsz, t, self.num_heads, self.head_dim)  # views of the conv output
        b = b.reshape(bsz, t, self.n_groups, self.state_size)
        c = c.reshape(bsz, t, self.n_groups, self.state_size)
        dt = dt.contiguous()  # (B, T, H): a few MB; as in_proj's slice it would cut the pieces to in_proj's width
        scan = kernels.ssd_scan_cuda if cuda else torch_ssd.ssd_scan
        # 32-bit kernels: pieces sized by where x, B, C lie (slices of the conv output's width)
        scan_limit = tokens_per_piece(xs, dt, b, c, multiple_of=self.chunk_size) if cuda else t
        y, ssm_final = in_pieces(
            scan,
            scan_limit,
            ("x", "dt", "B", "C"),
            x=xs,
            dt=dt,
            A=-torch.exp(self.A_log.float()),
            B=b,
            C=c,
            chunk_size=self.chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            dt_limit=self.time_step_limit,
            initial_state=ssm_init,
            seq_idx=seg,
        )
        if cache is not None:
            # the last column's segments: a view (segment tensors are never written in place), no copy per layer
            cache.conv_state, cache.ssm_state, cache.segment = conv_final, ssm_final, segment[:, -1]
        return self.ssd_output(y, z)

    def ssd_output(self, y: Tensor, z: Tensor) -> Tensor:
        """The mixer after its scan: y (B, T, H, P) and the gate z (B, T, inner) -> gated norm ->
        out_proj -> (B, T, D) in z's dtype."""
        bsz, t = y.shape[:2]
        y = self.norm(y.reshape(bsz, t, self.inner), z, fused=self._use_cuda(z))
        out: Tensor = self.out_proj(y.to(z.dtype))
        return out

    def ssd_inputs(
        self, x: Tensor, mask: Tensor, segment: Tensor, conv_cut: tuple[Tensor, Tensor] | None = None
    ) -> SSDInputs:
        """What this layer's SSD scan consumes for x (B, T, D): in_proj, conv, SiLU, Δ discretised
        (no cache). ``mixer.ssd_output(ssd_scan(...), z)`` of them is ``forward``.

        ``conv_cut`` = (sources, receivers), each (B, T) bool, removes the conv taps from source
        positions into receiver positions: the conv outputs at receivers are those of the input
        with the sources zeroed (the analysis of information flow blocks vision -> text this way).
        """
        bsz, t, _ = x.shape
        cuda = self._use_cuda(x)
        keep, z, xbc, dt = self._project(x, mask)
        conv_out, _ = self._conv(xbc, segment, None, cuda)
        if conv_cut is not None:
            sources, receivers = conv_cut
            cut, _ = self._conv(xbc * (~sources).unsqueeze(-1).to(xbc.dtype), segment, None, cuda)
            conv_out = torch.where(receivers.unsqueeze(-1), cut, conv_out)
        xs, b, c = self._split_conv_out(conv_out * keep)
        return SSDInputs(
            x=xs.reshape(bsz, t, self.num_heads, self.head_dim),
            dt=torch_ssd.discretize_dt(dt, self.dt_bias, True, self.time_step_limit),
            A=-torch.exp(self.A_log.float()),
            B=b.reshape(bsz, t, self.n_groups, self.state_size),
            C=c.reshape(bsz, t, self.n_groups, self.state_size),
            D=self.D,
            z=z,
        )

    def step(self, x: Tensor, cache: MambaLayerCache) -> Tensor:
        """One new token per row: x (B, 1, D) -> (B, 1, D); updates ``cache`` in place."""
        if cache.conv_state is None or cache.ssm_state is None:
            raise RuntimeError("Mamba2Mixer.step needs a cache filled by a prefill forward first")
        bsz = x.shape[0]
        cuda = self._use_cuda(x)
        z, xbc, dt = self.in_proj(x[:, 0]).split([self.inner, self.conv_dim, self.num_heads], dim=-1)
        conv_step = kernels.causal_conv1d_step_cuda if cuda else torch_conv.causal_conv1d_step
        xbc = conv_step(xbc, cache.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias)  # (B, C)
        xs, b, c = self._split_conv_out(xbc)
        ssd_step = kernels.ssd_step_cuda if cuda else torch_ssd.ssd_step
        y = ssd_step(
            cache.ssm_state,
            xs.reshape(bsz, self.num_heads, self.head_dim),
            dt,
            -torch.exp(self.A_log.float()),
            b.reshape(bsz, self.n_groups, self.state_size),
            c.reshape(bsz, self.n_groups, self.state_size),
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
        )
        y = self.norm(y.reshape(bsz, 1, self.inner), z.unsqueeze(1), fused=cuda)
        out: Tensor = self.out_proj(y.to(x.dtype))
        return out
