"""FLOP formulas against torch's FLOP counter (dense parts) and naive hand counts (causal parts)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_viper.backbones.nemotron_h import NemotronHBackbone
from lightning_viper.bench.flops import (
    BackboneShape,
    ProjectorShape,
    StageSpec,
    VideoLMShape,
    peak_bf16_flops,
    tokens_per_layer,
    tome_rounds,
)
from lightning_viper.bench.shapes import backbone_shape, encoder_shape, projector_shape
from lightning_viper.encoders.siglip import SiglipEncoder
from lightning_viper.projectors.tome import ToMeProjector
from lightning_viper.sequence import SequenceState, TokenKind

TINY = dict(
    hidden_size=32,
    vocab_size=50,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    mamba_num_heads=4,
    mamba_head_dim=8,
    ssm_state_size=8,
    n_groups=2,
    conv_kernel=4,
    chunk_size=4,
    intermediate_size=48,
)


def counted(fn) -> int:  # type: ignore[no-untyped-def]
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def text_state(t: int) -> SequenceState:
    ones = torch.ones(1, t, dtype=torch.bool)
    return SequenceState(
        mask=ones,
        kind=torch.full((1, t), int(TokenKind.TEXT)),
        segment=torch.zeros(1, t).long(),
        position=torch.arange(t)[None],
        origin=torch.arange(t)[None],
        segment_row=torch.zeros(1).long(),
        num_vision_orig=torch.zeros(1).long(),
    )


def test_encoder_matches_flop_counter() -> None:
    torch.manual_seed(0)
    enc = SiglipEncoder(feature_layer=-1, fused=False)  # runs (and needs) all layers
    enc.model.set_attn_implementation("eager")  # matmul attention: the counter sees QK^T and AV
    frames = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert counted(lambda: enc(frames)) == 3 * encoder_shape(enc).flops_per_frame()
    assert encoder_shape(SiglipEncoder(feature_layer=-2)).layers == 1  # second-to-last: one layer is useful


def test_projector_mlp_matches_counter_and_tome_rounds() -> None:
    proj = ToMeProjector(tokens_per_frame=4, num_heads=4)
    proj.bind(32, 24)
    shape = ProjectorShape(vision_dim=32, llm_dim=24, patches=16, tokens_per_frame=4, tome=False)
    assert proj.mlp is not None
    merged = torch.randn(5, 4, 32)
    assert counted(lambda: proj.mlp(merged)) == 5 * shape.flops_per_frame()  # type: ignore[misc]
    # ToMe 729 -> 16: each round merges min(n - 16, n // 2)
    assert tome_rounds(729, 16) == [(729, 364), (365, 182), (183, 91), (92, 46), (46, 23), (23, 7)]
    with_tome = ProjectorShape(32, 24, 16, 4, tome=True).flops_per_frame() - shape.flops_per_frame()
    assert with_tome == 2 * 32 * (8 * 8 + 4 * 4)  # rounds 16 -> 8 -> 4: |A| x |B| x Dv dot products


def test_dense_layers_match_flop_counter() -> None:
    torch.manual_seed(0)
    t = 10
    model = NemotronHBackbone(pattern="--", kernels="torch", **TINY).eval()
    shape = backbone_shape(model)

    def run() -> None:
        with torch.no_grad():
            out = model(torch.randn(1, t, 32), text_state(t))
            model.logits(out.hidden[:, -1])

    assert counted(run) == shape.forward_flops([t, t], logit_tokens=1)
    # attention projections alone (the counter does not see the CPU flash kernel of SDPA)
    attn_model = NemotronHBackbone(pattern="*", kernels="torch", **TINY).eval()
    proj = [m for m in attn_model.modules() if isinstance(m, torch.nn.Linear) and m is not attn_model.lm_head]
    x = torch.randn(1, t, 32)
    dense = sum(
        counted(lambda lin=lin: lin(x if lin.in_features == 32 else torch.randn(1, t, lin.in_features))) for lin in proj
    )
    assert dense == backbone_shape(attn_model).attention_proj_flops(t)


def test_attention_and_ssd_against_hand_count() -> None:
    shape = backbone_shape(NemotronHBackbone(pattern="M*", kernels="torch", **TINY))
    t = 11
    # causal attention by hand: query i meets keys 0..i; each pair: q.k and p.v, hd MACs each, per query head
    pairs = sum(i + 1 for i in range(t))
    assert shape.attention_core_flops(t) == 2 * 2 * 8 * 4 * pairs
    # SSD with chunk 4 over 11 tokens: chunks of 4, 4, 3
    h, p, n, g = 4, 8, 8, 2
    intra = 0
    for length in (4, 4, 3):
        for i in range(length):
            for _ in range(i + 1):
                intra += n * g + p * h  # C_i.B_j per group, then (weight * x_j) per head
    macs = intra + t * h * p * n + t * h * p * n + 3 * h * p * n + t * h * p
    assert shape.ssd_flops(t) == 2 * macs
    d, inner, conv_dim = 32, h * p, h * p + 2 * g * n
    mamba = 2 * t * (d * (inner + conv_dim + h) + conv_dim * 4 + inner * d) + 2 * macs
    assert shape.layer_flops("mamba", t) == mamba


def test_stages_change_tokens_per_layer_and_add_their_work() -> None:
    stages = [StageSpec(1, 0.5, transfer=True), StageSpec(3, 0.1, attention=True)]
    assert tokens_per_layer(5, 100, 7, stages) == [107, 57, 57, 17, 17]
    bshape = BackboneShape(
        hidden=16, layer_kinds=("mlp",) * 5, vocab=10, intermediate=32, q_heads=2, kv_heads=1, head_dim=8
    )
    shape = VideoLMShape(
        encoder=encoder_shape(SiglipEncoder()), projector=ProjectorShape(32, 16, 16, 4, tome=False), backbone=bshape
    )
    plain = shape.prefill_flops(25, 7, 5)
    flops = shape.prefill_flops(25, 7, 5, stages)
    assert flops["backbone"] == bshape.forward_flops([107, 57, 57, 17, 17])
    transfer = 2 * 5 * 16 * 2 * 8 * 2 + 2 * 50 * 16 * 1 * 8 * 2 + 2 * 2 * 2 * 8 * 5 * 50  # q,o + k,v + QK/AV
    scores = 2 * 57 * 16 * 1 * 8 + 2 * 16 * 2 * 8 + 2 * 2 * 8 * 57  # k over the sequence, one q, q.k
    assert flops["compression"] == transfer + scores
    assert flops["total"] == pytest.approx(plain["total"] - plain["backbone"] + flops["backbone"] + transfer + scores)
    train = shape.train_flops(25, 7, 5, answer=3)
    head = 2 * 16 * 10
    assert train["total"] == pytest.approx(plain["encoder"] + 3 * (plain["projector"] + plain["backbone"] + 2 * head))


def test_projector_shape_reads_tome() -> None:
    enc = SiglipEncoder()
    proj = ToMeProjector(tokens_per_frame=4, num_heads=4)
    shape = projector_shape(proj, enc, 64)
    assert (shape.patches, shape.tokens_per_frame, shape.tome) == (16, 4, True)


def test_peak_table() -> None:
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_bf16_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_bf16_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_bf16_flops("cpu") is None
