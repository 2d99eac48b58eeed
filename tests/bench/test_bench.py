"""bench_prefill / bench_train on the tiny model, on CPU (wall-clock timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_viper.bench import bench_prefill, bench_train
from lightning_viper.bench import prefill as prefill_module
from lightning_viper.bench.models import build_model, paper_layers, strategy_stages
from lightning_viper.bench.peer import hf_peer, hf_prefill
from lightning_viper.bench.pipeline import FrameSource, embed_prompt, prefill, prompt_ids
from lightning_viper.compression import TokenDrop, TransV

CPU = torch.device("cpu")
ROW_KEYS = {
    "frames",
    "strategy",
    "status",
    "latency_ms",
    "latency_runs_ms",
    "embed_ms",
    "backbone_ms",
    "seq_len",
    "seq_len_final",
    "peak_alloc_gib",
    "tokens_per_s",
    "frames_per_s",
    "flops",
    "tflops_per_s",
    "mfu",
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_prefill_rows_json_and_plot(tmp_path: Path) -> None:
    res = bench_prefill(
        frames=[2, 6], model="tiny", repeats=2, micro_batch=4, instruction_tokens=6, out_dir=str(tmp_path), tag="p"
    )
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    assert (tmp_path / "p.png").stat().st_size > 0
    assert [(r["strategy"], r["frames"]) for r in res["rows"]] == [
        (s, f) for s in ("none", "transv", "uniform_drop") for f in (2, 6)
    ]
    for row in res["rows"]:
        assert set(row) >= ROW_KEYS and row["status"] == "ok"
        assert len(row["latency_runs_ms"]) == 2 and row["latency_ms"] > row["embed_ms"] > 0
        assert row["mfu"] is None and row["peak_alloc_gib"] is None  # CPU: no peak rate, no allocator stats
        assert row["flops"]["total"] == pytest.approx(sum(v for k, v in row["flops"].items() if k != "total"))
        assert row["tokens_per_s"] == pytest.approx(row["seq_len"] / row["latency_ms"] * 1000)
    by = {(r["strategy"], r["frames"]): r for r in res["rows"]}
    # tiny: 4 tokens per frame, 6 frames -> 24 vision tokens; stages keep 50% then 10% of them
    assert by[("none", 6)]["seq_len"] - by[("none", 2)]["seq_len"] == 16
    text = by[("none", 6)]["seq_len"] - 24
    assert by[("transv", 6)]["seq_len_final"] == text + 2 == by[("uniform_drop", 6)]["seq_len_final"]
    assert by[("transv", 6)]["flops"]["compression"] > 0 == by[("uniform_drop", 6)]["flops"]["compression"]
    assert res["max_frames"] == {"none": 6, "transv": 6, "uniform_drop": 6}
    assert [p["frames"] for p in res["peer"]] == [2, 6] and all(p["status"] == "ok" for p in res["peer"])
    assert res["peer"][0]["speedup_backbone"] == pytest.approx(
        res["peer"][0]["hf_backbone_ms"] / by[("none", 2)]["backbone_ms"]
    )


@pytest.mark.parametrize("every", [False, True])
def test_warmup_before_the_first_or_every_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every: bool) -> None:
    calls: list[int] = []
    real = prefill_module.prefill

    def counted(model, source, frames, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(frames)
        return real(model, source, frames, *args, **kwargs)

    monkeypatch.setattr(prefill_module, "prefill", counted)
    res = bench_prefill(
        frames=[2, 4], strategies=["none"], model="tiny", warmup=1, repeats=2, warmup_every_size=every,
        peer=False, out_dir=str(tmp_path), plot=False,
    )  # fmt: skip
    assert calls == ([2, 2, 2, 4, 4, 4] if every else [2, 2, 2, 4, 4])  # untimed + 2 timed per size
    assert res["config"]["warmup_every_size"] is every
    assert all(len(r["latency_runs_ms"]) == 2 for r in res["rows"])


def test_prefill_stops_a_strategy_at_oom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = prefill_module._measure

    def fake(model, source, frames, *args, **kwargs):  # type: ignore[no-untyped-def]
        if frames >= 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(model, source, frames, *args, **kwargs)

    monkeypatch.setattr(prefill_module, "_measure", fake)
    res = bench_prefill(
        frames=[2, 4, 8], strategies=["none"], model="tiny", repeats=1, peer=False, out_dir=str(tmp_path), plot=False
    )
    assert [(r["frames"], r["status"]) for r in res["rows"]] == [(2, "ok"), (4, "oom")]  # 8 is not tried
    assert res["rows"][1]["error"].startswith("CUDA out of memory")
    assert res["max_frames"] == {"none": 2}


def test_time_budget_skips_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = prefill_module._measure

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        return {**out, "latency_ms": 3_600_000.0}  # pretend the first size took an hour

    monkeypatch.setattr(prefill_module, "_measure", slow)
    res = bench_prefill(
        frames=[2, 4],
        strategies=["none"],
        model="tiny",
        repeats=1,
        peer=False,
        time_budget_s=600.0,
        out_dir=str(tmp_path),
        plot=False,
    )
    assert res["rows"][0]["status"] == "ok"  # the first size has no prediction to go on
    assert res["rows"][1]["status"] == "skipped (time budget)" and res["rows"][1]["predicted_s"] > 3600
    res = bench_prefill(
        frames=[2],
        strategies=["none"],
        model="tiny",
        repeats=1,
        peer=False,
        time_budget_s=0.0,
        out_dir=str(tmp_path),
        plot=False,
    )
    assert res["rows"][0]["status"] == "skipped (time budget)"  # nothing left: not even the first size


def test_peer_shares_weights_and_agrees_with_ours() -> None:
    torch.manual_seed(0)
    lm = build_model("tiny", "none", CPU, dtype="float32").eval()
    peer = hf_peer(lm.backbone)  # type: ignore[arg-type]
    assert peer.lm_head.weight.data_ptr() == lm.backbone.lm_head.weight.data_ptr()
    source = FrameSource(32, 4, CPU)
    ids, _ = prompt_ids(lm, 6, CPU)
    lm.encoder.micro_batch = 2
    hidden, state = embed_prompt(lm, lm.encode_video(source.video(5)), ids)
    with torch.no_grad():
        ours = lm.backbone.logits(lm.backbone(hidden, state).hidden[:, -1])
        theirs = peer(inputs_embeds=hidden, logits_to_keep=1).logits[:, -1]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert hf_prefill(peer, hidden).item() == prefill(lm, source, 5, ids).token.item()


def test_pooled_frames_encode_like_the_same_frames_on_the_device() -> None:
    torch.manual_seed(0)
    lm = build_model("tiny", "none", CPU, dtype="float32", micro_batch=3).eval()
    source = FrameSource(32, 4, CPU)
    video = source.video(7)  # cycles the 4-frame pool: 0 1 2 3 0 1 2
    assert len(video) == 7 and torch.equal(video[2:6], source.frames[[2, 3, 0, 1]])
    with torch.no_grad():
        whole = lm.encode_video(source.frames[[0, 1, 2, 3, 0, 1, 2]])
        pooled = lm.encode_video(video)  # slices served from the host pool, 3 frames at a time
    torch.testing.assert_close(pooled, whole)


def test_prefill_without_the_encoder_has_the_same_sequence() -> None:
    lm = build_model("tiny", "transv", CPU, dtype="float32").eval()
    source = FrameSource(32, 4, CPU)
    ids, _ = prompt_ids(lm, 6, CPU)
    real, fake = prefill(lm, source, 6, ids), prefill(lm, source, 6, ids, encode=False)
    assert (real.seq_len, real.seq_len_final) == (fake.seq_len, fake.seq_len_final)


def test_strategies_follow_the_paper_layers() -> None:
    lm = build_model("tiny", "transv", CPU, dtype="float32")
    first, second = paper_layers(lm.backbone)
    assert lm.backbone.is_attention_layer(second) and first < second
    stages = strategy_stages("uniform_drop", lm.backbone)
    assert [type(s) for s in stages] == [TokenDrop, TokenDrop]
    assert [(s.layer, s.keep) for s in stages] == [(first, 0.5), (second, 0.1)]
    tv = list(lm.compression)
    assert [type(s) for s in tv] == [TransV, TransV] and [s.selector for s in tv] == ["uniform", "attention"]


def test_train_rows(tmp_path: Path) -> None:
    res = bench_train(frames=4, batch_size=2, model="tiny", warmup=1, repeats=2, out_dir=str(tmp_path), tag="t")
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == json.loads(json.dumps(res["rows"]))
    assert [r["gradient_checkpointing"] for r in res["rows"]] == [False, True]
    for row in res["rows"]:
        assert row["status"] == "ok" and row["step_ms"] > row["forward_ms"] > 0
        assert row["loss"] == pytest.approx(row["loss"]) and row["mfu"] is None
        flops = row["flops"]
        assert flops["total"] == pytest.approx(flops["encoder"] + 3 * flops["trained_forward"])
        assert row["tokens_per_s"] == pytest.approx(2 * row["seq_len"] / row["step_ms"] * 1000)
    params = res["config"]["params"]
    assert params["model/params_trainable"] == params["model/params_total"] - params["model/params_encoder"]


def test_breakdown_reads_the_model_ranges_from_a_profile(tmp_path: Path) -> None:
    from lightning_viper.bench import bench_breakdown

    res = bench_breakdown(
        model="tiny", strategy="transv", frames=6, micro_batch=4, out_dir=str(tmp_path), tag="b", device="cpu"
    )
    regions, ms = res["regions"], res["regions_ms"]
    assert {
        "encode",
        "encoder",
        "projector",
        "splice",
        "prefill",
        "layer/mamba",
        "layer/attention",
        "layer/mlp",
    } <= set(regions)
    assert regions["encoder"]["count"] == 2 == regions["projector"]["count"]  # 6 frames in micro-batches of 4
    assert regions["layer/mamba"]["count"] == 2 and regions["prefill"]["count"] == 1  # tiny: 'M-*M-*'
    first, second = paper_layers(build_model("tiny", "transv", CPU, dtype="float32").backbone)
    assert sorted(n for n in regions if n.startswith("stage/")) == [f"stage/L{first}_TransV", f"stage/L{second}_TransV"]
    # nesting: the parts fit inside their parents
    assert ms["encoder"] + ms["projector"] <= ms["encode"] + 1e-6
    layers = sum(v for n, v in ms.items() if n.startswith(("layer/", "stage/")))
    assert 0 < layers <= ms["prefill"] + 1e-6
    assert json.loads((tmp_path / "b.json").read_text())["regions_ms"] == pytest.approx(ms)
    assert "Self CPU" in (tmp_path / "b_profile.txt").read_text()
    train = bench_breakdown(
        model="tiny", mode="train", frames=2, micro_batch=4, out_dir=str(tmp_path), tag="bt", device="cpu"
    )
    assert "layer/mamba" in train["regions"] and (tmp_path / "bt_profile.txt").stat().st_size > 0


def test_breakdown_profiles_our_backbone_beside_transformers(tmp_path: Path) -> None:
    from lightning_viper.bench import bench_breakdown

    res = bench_breakdown(
        model="tiny",
        strategy="none",
        frames=2,
        micro_batch=4,
        mode="peer",
        out_dir=str(tmp_path),
        tag="p",
        device="cpu",
    )
    ours, theirs = res["counts"], res["peer_counts"]
    assert ours["aten_ops"] > 0 and theirs["aten_ops"] > 0
    assert ours["kernels"] == 0 == theirs["kernels"]  # no device kernels on the CPU
    assert "layer/mamba" in res["regions"] and "encode" not in res["regions"]  # the backbone alone was profiled
    assert "Self CPU" in (tmp_path / "p_peer_profile.txt").read_text()
    assert json.loads((tmp_path / "p.json").read_text())["peer_counts"] == theirs


def test_decode_rows_for_both_families(tmp_path: Path) -> None:
    from lightning_viper.bench import bench_decode

    res = bench_decode(input_tokens=40, new_tokens=5, size="tiny", repeats=2, out_dir=str(tmp_path), tag="d")
    assert [r["family"] for r in res["rows"]] == ["hybrid", "qwen2"]
    for row in res["rows"]:
        assert row["status"] == "ok" and len(row["decode_runs_ms"]) == 2
        assert row["decode_tokens_per_s"] == pytest.approx(4 / row["decode_ms"] * 1000)
    assert res["hybrid_over_qwen2"] == pytest.approx(
        res["rows"][0]["decode_tokens_per_s"] / res["rows"][1]["decode_tokens_per_s"]
    )
    assert json.loads((tmp_path / "d.json").read_text())["rows"][0]["family"] == "hybrid"


def test_encoder_rows(tmp_path: Path) -> None:
    from lightning_viper.bench import bench_encoder

    variants = [{"fused": False}, {"fused": True}]
    res = bench_encoder(
        frames=5,
        micro_batches=[2, 4],
        variants=variants,
        size="tiny",
        repeats=2,
        error_frames=3,
        dtype="float32",
        out_dir=str(tmp_path),
    )
    assert [(r["micro_batch"], r["fused"], r["status"]) for r in res["rows"]] == [
        (2, False, "ok"),
        (4, False, "ok"),
        (2, True, "ok"),
        (4, True, "ok"),
    ]
    for row in res["rows"]:
        assert row["ms_per_frame"] == pytest.approx(row["ms"] / 5) and row["mfu"] is None and len(row["runs_ms"]) == 2
        # float32 on the CPU: both paths are transformers' maths on the same weights
        assert row["rel_err"] < 1e-5 and row["cos_min"] > 0.99999
    assert json.loads((tmp_path / "encoder.json").read_text())["rows"][1]["micro_batch"] == 4


def test_encoder_error_sees_different_weights() -> None:
    """The error columns can fail: features of another seed's weights are far from the reference."""
    from lightning_viper.bench.encoder import feature_error, natural_frames
    from lightning_viper.encoders.siglip import SiglipEncoder

    x = natural_frames(2, 32)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 32, 32) and x.float().std() > 10
    torch.manual_seed(0)
    a = SiglipEncoder()(x)
    torch.manual_seed(1)
    b = SiglipEncoder()(x)
    assert feature_error(b, a)["rel_err"] > 0.1
    assert feature_error(a, a) == {"rel_err": 0.0, "cos_min": pytest.approx(1.0)}
