"""Model FLOP counts of the video LM (forward), written from the layer equations.

Conventions (the usual "model FLOPs" of MFU):

* a multiply-add counts 2 FLOPs; only matrix-like work is counted (linear layers, convolutions,
  attention products, the SSD scan's products); norms, activations, softmax, gating, ToMe's
  weighted means and index bookkeeping are left out (each is O(tokens x width), well under 1%);
* causal work counts only the causally needed half: a query at position i (1-based) meets i keys,
  so a sequence of T tokens costs sum_i i = T(T+1)/2 query-key pairs per head;
* the Mamba-2 scan is counted as the chunked SSD algorithm computes it (chunk L): per chunk the
  causal C.B^T products per group, their weighted sums over x per head, the chunk states B^T.x,
  the inter-chunk outputs C.state and the state hand-over between chunks;
* prefill to the first token computes LM-head logits for one token per sample;
* recomputation (gradient checkpointing) is NOT counted: a training step is forward + 2x forward
  for the parts that train (backward of a linear map = grad of input + grad of weight).

All functions return floats (FLOPs), for batch size 1 unless stated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LayerKind = Literal["mamba", "attention", "mlp", "decoder"]


@dataclass(frozen=True)
class EncoderShape:
    """A ViT (SigLIP) run up to the layer whose features are used.

    ``layers`` counts only the transformer layers actually run (SigLIP so400m has 27; features
    from the second-to-last layer need 26 if the encoder stops there).
    """

    image_size: int
    patch_size: int
    hidden: int
    intermediate: int
    layers: int
    channels: int = 3

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def flops_per_frame(self) -> float:
        p, d = self.patches, self.hidden
        embed = 2 * p * self.channels * self.patch_size**2 * d  # conv patch embedding
        linear = 2 * p * (4 * d * d + 2 * d * self.intermediate)  # q, k, v, o + fc1, fc2
        attention = 2 * 2 * p * p * d  # QK^T and AV, full (non-causal) over P patches
        return float(embed + self.layers * (linear + attention))


def tome_rounds(patches: int, target: int) -> list[tuple[int, int]]:
    """(tokens n, merged r) of each bipartite round, r = min(n - target, n // 2), until target remain."""
    rounds = []
    n = patches
    while n > target:
        r = min(n - target, n // 2)
        rounds.append((n, r))
        n -= r
    return rounds


@dataclass(frozen=True)
class ProjectorShape:
    """Optional ToMe merging to ``tokens_per_frame`` then Linear(Dv, D) -> GELU -> Linear(D, D)."""

    vision_dim: int
    llm_dim: int
    patches: int
    tokens_per_frame: int
    tome: bool = True

    def flops_per_frame(self) -> float:
        merge = 0.0
        if self.tome:  # similarity of the A half (ceil n/2) with the B half (floor n/2)
            merge = sum(
                2.0 * ((n + 1) // 2) * (n // 2) * self.vision_dim
                for n, _ in tome_rounds(self.patches, self.tokens_per_frame)
            )
        n = self.tokens_per_frame
        mlp = 2 * n * (self.vision_dim * self.llm_dim + self.llm_dim * self.llm_dim)
        return float(merge + mlp)


@dataclass(frozen=True)
class BackboneShape:
    """Widths of a hybrid (Mamba-2 / attention / MLP) or Transformer ('decoder') stack."""

    hidden: int
    layer_kinds: tuple[LayerKind, ...]
    vocab: int
    intermediate: int  # MLP width (squared-ReLU: 2 matrices; decoder: SwiGLU, 3 matrices)
    q_heads: int
    kv_heads: int
    head_dim: int
    mamba_heads: int = 0
    mamba_head_dim: int = 0
    state: int = 0
    groups: int = 0
    conv_kernel: int = 4
    chunk: int = 256

    @property
    def mamba_inner(self) -> int:
        return self.mamba_heads * self.mamba_head_dim

    @property
    def conv_dim(self) -> int:
        return self.mamba_inner + 2 * self.groups * self.state

    def attention_proj_flops(self, tokens: int) -> float:
        """q, k, v, o projections over ``tokens`` tokens."""
        d, hd = self.hidden, self.head_dim
        return 2.0 * tokens * d * hd * (2 * self.q_heads + 2 * self.kv_heads)

    def attention_core_flops(self, tokens: int) -> float:
        """Causal QK^T and AV over one sequence of ``tokens`` tokens."""
        return 2.0 * 2 * self.head_dim * self.q_heads * tokens * (tokens + 1) / 2

    def ssd_flops(self, tokens: int) -> float:
        """The chunked SSD scan over one sequence of ``tokens`` tokens."""
        h, p, n, g, lc = self.mamba_heads, self.mamba_head_dim, self.state, self.groups, self.chunk
        full, tail = divmod(tokens, lc)
        pairs = full * lc * (lc + 1) / 2 + tail * (tail + 1) / 2  # causal (i, j) pairs inside chunks
        chunks = full + (1 if tail else 0)
        intra = 2.0 * pairs * (n * g + p * h)  # C.B^T per group, then weighted sums of x per head
        states = 2.0 * tokens * h * p * n  # chunk states: sum_t B_t x_t^T
        outputs = 2.0 * tokens * h * p * n  # C_t . (state entering the chunk)
        handover = 2.0 * chunks * h * p * n  # decay-and-add of the state between chunks
        skip = 2.0 * tokens * h * p  # D * x
        return intra + states + outputs + handover + skip

    def layer_flops(self, kind: LayerKind, tokens: int) -> float:
        """Forward FLOPs of one layer over one sequence of ``tokens`` tokens."""
        d = self.hidden
        if kind == "mamba":
            in_proj = 2.0 * tokens * d * (self.mamba_inner + self.conv_dim + self.mamba_heads)
            conv = 2.0 * tokens * self.conv_dim * self.conv_kernel
            out_proj = 2.0 * tokens * self.mamba_inner * d
            return in_proj + conv + self.ssd_flops(tokens) + out_proj
        if kind == "attention":
            return self.attention_proj_flops(tokens) + self.attention_core_flops(tokens)
        if kind == "mlp":
            return 2.0 * tokens * 2 * d * self.intermediate
        if kind == "decoder":
            mlp = 2.0 * tokens * 3 * d * self.intermediate
            return self.attention_proj_flops(tokens) + self.attention_core_flops(tokens) + mlp
        raise ValueError(f"unknown layer kind {kind!r}")

    def forward_flops(self, tokens_per_layer: Sequence[int], logit_tokens: int = 1) -> float:
        """The whole stack, layer l seeing ``tokens_per_layer[l]`` tokens, plus the LM head."""
        if len(tokens_per_layer) != len(self.layer_kinds):
            raise ValueError(f"need one token count per layer ({len(self.layer_kinds)}), got {len(tokens_per_layer)}")
        body = sum(self.layer_flops(k, t) for k, t in zip(self.layer_kinds, tokens_per_layer, strict=True))
        return body + 2.0 * logit_tokens * self.hidden * self.vocab


@dataclass(frozen=True)
class StageSpec:
    """A compression stage as the FLOP count sees it: before ``layer``, keep ``keep`` of the
    original vision tokens; ``transfer`` adds TransV's cross-attention, ``attention`` adds the
    score computation of attention-guided selection."""

    layer: int
    keep: float
    transfer: bool = False
    attention: bool = False


def tokens_per_layer(num_layers: int, vision: int, text: int, stages: Sequence[StageSpec]) -> list[int]:
    """Sequence length seen by every layer when ``stages`` drop vision tokens (kept count rounds
    half up, as :mod:`lightning_viper.compression.selection` does)."""
    out = []
    current = vision
    by_layer = sorted(stages, key=lambda s: s.layer)
    i = 0
    for layer in range(num_layers):
        while i < len(by_layer) and by_layer[i].layer == layer:
            current = min(current, int(by_layer[i].keep * vision + 0.5))
            i += 1
        out.append(current + text)
    return out


def stage_flops(
    shape: BackboneShape, stage: StageSpec, seq_before: int, vision_before: int, vision_after: int, instruction: int
) -> float:
    """Extra work of one stage: attention scores of the query token over the whole sequence
    (k projection of every token + one query), and TransV's cross-attention from the
    ``instruction`` tokens to the dropped vision tokens (q over instructions, k/v over dropped)."""
    d, hd = shape.hidden, shape.head_dim
    flops = 0.0
    if stage.attention:
        flops += 2.0 * seq_before * d * shape.kv_heads * hd + 2.0 * d * shape.q_heads * hd
        flops += 2.0 * shape.q_heads * hd * seq_before
    if stage.transfer:
        dropped = vision_before - vision_after
        flops += 2.0 * instruction * d * shape.q_heads * hd * 2  # q and o projections
        flops += 2.0 * dropped * d * shape.kv_heads * hd * 2  # k and v projections
        flops += 2.0 * 2 * shape.q_heads * hd * instruction * dropped  # QK^T and AV, non-causal
    return flops


@dataclass(frozen=True)
class VideoLMShape:
    encoder: EncoderShape
    projector: ProjectorShape
    backbone: BackboneShape

    def prefill_flops(
        self, frames: int, text: int, instruction: int, stages: Sequence[StageSpec] = ()
    ) -> dict[str, float]:
        """Forward FLOPs of prefill to the first token for one sample of ``frames`` frames and
        ``text`` text tokens (``instruction`` of them after the video). Returns the parts and 'total'."""
        enc = frames * self.encoder.flops_per_frame()
        proj = frames * self.projector.flops_per_frame()
        vision = frames * self.projector.tokens_per_frame
        seq = tokens_per_layer(len(self.backbone.layer_kinds), vision, text, stages)
        backbone = self.backbone.forward_flops(seq, logit_tokens=1)
        extra = 0.0
        for st in stages:
            before = seq[st.layer - 1] - text if st.layer > 0 else vision
            after = seq[st.layer] - text
            extra += stage_flops(self.backbone, st, before + text, before, after, instruction)
        return {
            "encoder": enc,
            "projector": proj,
            "backbone": backbone,
            "compression": extra,
            "total": enc + proj + backbone + extra,
        }

    def train_flops(
        self, frames: int, text: int, instruction: int, answer: int, stages: Sequence[StageSpec] = ()
    ) -> dict[str, float]:
        """One training sample: frozen encoder forward only; projector, backbone and stages
        forward + backward (3x forward); LM head on the ``answer`` tokens."""
        fwd = self.prefill_flops(frames, text, instruction, stages)
        head = 2.0 * self.backbone.hidden * self.backbone.vocab
        trained_fwd = fwd["projector"] + fwd["backbone"] - head + answer * head + fwd["compression"]
        return {"encoder": fwd["encoder"], "trained_forward": trained_fwd, "total": fwd["encoder"] + 3.0 * trained_fwd}


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak of known GPUs (datasheet, FLOP/s), None if unknown."""
    name = device_name.upper()
    if "H100" in name and "PCIE" in name:
        return 756e12
    if "H100" in name and "NVL" in name:
        return 835e12
    if "H100" in name or "H200" in name or "GH200" in name:
        return 989.4e12  # SXM parts (H200: the same chip, more memory)
    if "A100" in name:
        return 312e12
    return None
