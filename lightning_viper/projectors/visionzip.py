"""VisionZip-style projector: keep the patches the encoder attends to most, merge the rest into a few
contextual tokens, then the MLP; training-free, before the LLM.

Per frame, with ``received[p]`` the attention patch p receives inside the encoder's feature layer
(averaged over heads and queries; SigLIP has no CLS token, so every token's query counts; a CLS
tower uses its CLS queries; see ``HFVisionTower.keep_attention``):

1. dominant: the ``dominant`` patches with the highest ``received`` (ties: the earlier patch), in
   their original order;
2. contextual: among the R remaining patches (in order), ``contextual`` targets at the centres of
   equal bins, ``j_i = floor((2i + 1) R / (2 C))``; every other remaining patch joins the target
   it is most cosine-similar to (ties: the earlier target), and each contextual token is the mean
   of its target and the patches that joined it;
3. output: the dominant tokens then the contextual tokens, ``dominant + contextual`` per frame,
   through the same Linear -> GELU -> Linear head as :class:`MLPProjector` (same weight names, so
   a checkpoint trained with the MLP or ToMe projector loads).

VisionZip (Yang et al., 2025) measures similarity on the feature layer's attention keys; this file
uses the features themselves (the tokens that are averaged).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_viper.encoders.base import VisionEncoder
from lightning_viper.projectors.mlp import MLPProjector


@runtime_checkable
class AttentionRecorder(Protocol):
    """An encoder that can record the attention each patch receives (``HFVisionTower``)."""

    def keep_attention(self) -> None: ...

    def take_attention(self) -> Tensor: ...


def _take(x: Tensor, index: Tensor) -> Tensor:
    """x (F, P, D), index (F, K) -> (F, K, D)."""
    return x.gather(1, index.unsqueeze(-1).expand(*index.shape, x.shape[-1]))


def visionzip(features: Tensor, received: Tensor, dominant: int, contextual: int) -> Tensor:
    """(F, P, D) features and (F, P) attention received -> (F, dominant + contextual, D)."""
    f, p, d = features.shape
    if received.shape != (f, p):
        raise ValueError(f"VisionZip: attention received is {tuple(received.shape)}, expected {(f, p)}")
    if dominant < 0 or contextual < 0 or dominant + contextual > p or dominant + contextual < 1:
        raise ValueError(
            f"VisionZip: dominant={dominant} + contextual={contextual} must be between 1 and the {p} patches"
        )
    order = torch.sort(received.float(), dim=1, descending=True, stable=True).indices  # (F, P)
    dom = torch.sort(order[:, :dominant], dim=1).values  # (F, K) in original order
    is_dom = torch.zeros(f, p, dtype=torch.bool, device=features.device).scatter(1, dom, True)
    rest = torch.sort(is_dom.to(torch.int8), dim=1, stable=True).indices[:, : p - dominant]  # (F, R) in order
    out = [_take(features, dom)]
    r = p - dominant
    if contextual:
        i = torch.arange(contextual, device=features.device)
        slots = ((2 * i + 1) * r) // (2 * contextual)  # (C,) bin centres among the remaining
        is_target = torch.zeros(r, dtype=torch.bool, device=features.device).index_fill(0, slots, True)
        targets = _take(features, rest[:, slots])  # (F, C, D)
        others = _take(features, rest[:, ~is_target])  # (F, R - C, D)
        work = torch.promote_types(features.dtype, torch.float32)
        sim = F.normalize(others.to(work), dim=-1) @ F.normalize(targets.to(work), dim=-1).transpose(1, 2)
        assign = sim.argmax(dim=-1)  # (F, R - C): first maximum on ties
        sums = targets.to(work).scatter_add(1, assign.unsqueeze(-1).expand(-1, -1, d), others.to(work))
        counts = 1 + torch.zeros(f, contextual, dtype=work, device=features.device).scatter_add(
            1, assign, torch.ones_like(assign, dtype=work)
        )  # (F, C)
        out.append((sums / counts.unsqueeze(-1)).to(features.dtype))
    return torch.cat(out, dim=1)


class VisionZipProjector(MLPProjector):
    """``dominant`` + ``contextual`` tokens per frame (see the module docstring), then the MLP.

    Args:
        dominant: patches kept by the encoder's attention (VisionZip on LLaVA-1.5: 54 of 576).
        contextual: tokens merged from the rest (VisionZip on LLaVA-1.5: 10).

    Needs an encoder that records attention (``HFVisionTower``: SigLIP, CLIP); ``VideoLM`` hands
    it over through :meth:`attach_encoder`.
    """

    def __init__(self, dominant: int = 54, contextual: int = 10) -> None:
        super().__init__(tokens_per_frame=None)
        if dominant < 0 or contextual < 0 or dominant + contextual < 1:
            raise ValueError(f"VisionZipProjector: dominant={dominant}, contextual={contextual} must be >= 0, sum >= 1")
        self.dominant, self.contextual = dominant, contextual
        self._encoder: list[AttentionRecorder] = []  # a plain list: not a submodule (no duplicate weights)

    def describe(self) -> str:
        return f"VisionZip(dominant={self.dominant}, contextual={self.contextual})"

    def attach_encoder(self, encoder: VisionEncoder) -> None:
        if not isinstance(encoder, AttentionRecorder):
            raise ValueError(
                f"VisionZipProjector needs an encoder that records its attention (SigLIP, CLIP: HFVisionTower), "
                f"got {type(encoder).__name__}"
            )
        encoder.keep_attention()
        self._encoder = [encoder]

    def tokens_per_frame(self, num_patches: int) -> int:
        n = self.dominant + self.contextual
        if n > num_patches:
            raise ValueError(f"VisionZipProjector: dominant + contextual = {n} is more than the {num_patches} patches")
        return n

    def forward(self, features: Tensor) -> Tensor:
        """(F, P, Dv) -> (F, dominant + contextual, D), reading the attention of the same frames."""
        if self.mlp is None or not self._encoder:
            raise RuntimeError("VisionZipProjector: call bind() and attach_encoder() before use (VideoLM does this)")
        received = self._encoder[0].take_attention()  # (F, P) of these frames
        self.tokens_per_frame(features.shape[1])
        out: Tensor = self.mlp(visionzip(features, received.to(features.device), self.dominant, self.contextual))
        return out
