"""VideoLM on hand-made batches: packing, compression, generation, optimizer groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_viper.backbones import tiny_hybrid, tiny_qwen2
from lightning_viper.batch import VideoBatch
from lightning_viper.compression import TokenDrop, TransV
from lightning_viper.encoders import SiglipEncoder
from lightning_viper.module import VideoLM
from lightning_viper.projectors import ToMeProjector
from lightning_viper.text import build_demo_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return load_tokenizer(build_demo_tokenizer(tmp_path_factory.mktemp("tok")))


def make_batch(tokenizer, frames_per_sample: list[int], answers: list[str]) -> VideoBatch:
    rows, prompts = [], []
    for i, answer in enumerate(answers):
        prompt = tokenizer.encode(f"Video: <video> Question: what colour was the star {'?' * (i + 1)} Answer:")
        rows.append(prompt + tokenizer.encode(answer) + [tokenizer.eos_token_id])
        prompts.append(len(prompt))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for i, (row, p) in enumerate(zip(rows, prompts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, p : len(row)] = torch.tensor(row[p:])
    f = torch.tensor(frames_per_sample)
    meta = [{"task": "mcq", "answer": a, "options": ["A. red", "B. green"], "answer_index": 0} for a in answers]
    return VideoBatch(
        frames=torch.randint(0, 256, (int(f.sum()), 3, 32, 32), dtype=torch.uint8),
        frames_per_sample=f,
        input_ids=ids,
        attention_mask=ids != tokenizer.pad_token_id,
        labels=labels,
        prompt_lengths=torch.tensor(prompts),
        meta=meta,
    )


def make_model(tokenizer, backbone, compression=(), **kwargs) -> VideoLM:
    torch.manual_seed(0)
    encoder = SiglipEncoder(image_size=32, patch_size=8)
    model = VideoLM(
        encoder,
        ToMeProjector(tokens_per_frame=4, num_heads=2),
        backbone,
        list(compression),
        tokenizer=tokenizer,
        **kwargs,
    )
    return model.eval()


@pytest.mark.parametrize("family", ["hybrid", "qwen2"])
@pytest.mark.parametrize("with_transv", [False, True])
def test_packed_loss_equals_padded_loss(tokenizer, family: str, with_transv: bool) -> None:
    torch.manual_seed(1)
    backbone = tiny_hybrid(vocab_size=512) if family == "hybrid" else tiny_qwen2(vocab_size=512)
    stages = [TransV(layer=1, keep=0.5)] if with_transv else []
    padded = make_model(tokenizer, backbone, stages)
    if with_transv:
        with torch.no_grad():
            stages[0].alpha.fill_(0.7)  # make the transfer matter
    packed = make_model(tokenizer, backbone, stages, pack_sequences=True)
    packed.load_state_dict(padded.state_dict())
    batch = make_batch(tokenizer, [3, 1, 2], ["A", "B red", "D"])
    with torch.no_grad():
        loss_padded, _ = padded(batch)
        loss_packed, out = packed(batch)
    assert out.hidden.shape[0] == 1  # one packed row
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)


def test_generation_after_compression_is_deterministic_and_counts_tokens(tokenizer) -> None:
    model = make_model(tokenizer, tiny_hybrid(vocab_size=512), [TokenDrop(layer=1, keep=0.25)], max_new_tokens=3)
    batch = make_batch(tokenizer, [4, 2], ["A", "B"])
    texts, eff = model.generate(batch)
    again, _ = model.generate(batch)
    assert texts == again and len(texts) == 2
    assert eff["vision_tokens"] == (4 + 2) * 4 / 2  # 4 tokens per frame, per sample
    assert eff["vision_tokens_final"] == (round(0.25 * 16) + round(0.25 * 8)) / 2
    assert eff["stage0_L1_vision_after"] == eff["vision_tokens_final"]
    model.hparams["decode_graphs"] = True  # static caches (graph capture only on CUDA): same answers
    graphed, graphed_eff = model.generate(batch)
    assert graphed == texts and graphed_eff == eff


def test_strategy_name_names_the_projector_merge_and_the_stages(tokenizer) -> None:
    model = make_model(tokenizer, tiny_hybrid(vocab_size=512), [TransV(layer=1, keep=0.5)])
    assert model.strategy_name() == "ToMe(tokens_per_frame=4) + TransV(layer=1, keep=0.5, selector=uniform)"


def test_optimizer_groups_follow_trainable_parts_and_module_lr(tokenizer) -> None:
    model = make_model(
        tokenizer,
        tiny_hybrid(vocab_size=512),
        [TransV(layer=1, keep=0.5)],
        lr=1e-5,
        module_lr={"compression": 5e-5},
        trainable=["projector", "compression"],
    )
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())

    class FakeTrainer:
        estimated_stepping_batches = 100

    model._trainer = FakeTrainer()  # type: ignore[assignment]
    optim = model.configure_optimizers()["optimizer"]
    lrs = {g["name"]: g["initial_lr"] for g in optim.param_groups}  # before warmup scaling
    assert lrs == {"projector": 1e-5, "projector/no_decay": 1e-5, "compression": 5e-5, "compression/no_decay": 5e-5}
    covered = {id(p) for g in optim.param_groups for p in g["params"]}
    assert id(model.compression[0].alpha) in covered


def test_init_from_copies_a_part_strictly(tokenizer, tmp_path: Path) -> None:
    first = make_model(tokenizer, tiny_hybrid(vocab_size=512))
    torch.save({"state_dict": first.state_dict()}, tmp_path / "stage1.ckpt")
    torch.manual_seed(5)
    second = VideoLM(
        SiglipEncoder(image_size=32, patch_size=8),
        ToMeProjector(tokens_per_frame=4, num_heads=2),
        tiny_hybrid(vocab_size=512),
        init_from=str(tmp_path / "stage1.ckpt"),
        init_parts=["projector"],
    )
    for a, b in zip(first.projector.state_dict().values(), second.projector.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not exist"):
        VideoLM(SiglipEncoder(), ToMeProjector(), tiny_hybrid(), init_from=str(tmp_path / "missing.ckpt"))
