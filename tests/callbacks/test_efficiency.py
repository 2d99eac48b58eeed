"""EfficiencyMonitor: one untimed warm-up, prefill time and peak memory around VideoLM.generate;
generation itself gives the same tokens as a naive full-recompute greedy loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lightning_viper.backbones import tiny_hybrid
from lightning_viper.callbacks import EfficiencyMonitor
from lightning_viper.compression import TokenDrop
from tests.core.test_module import make_batch, make_model, tokenizer  # noqa: F401  (fixture)


def _logged(model: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[float, dict[str, Any]]]:
    logged: dict[str, tuple[float, dict[str, Any]]] = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kw: logged.__setitem__(name, (float(value), kw)))
    return logged


def test_first_batch_pays_one_untimed_warm_up_then_time_and_memory_are_logged(tokenizer, monkeypatch) -> None:  # noqa: F811
    import lightning_viper.module as module

    calls: list[int] = []
    real = module.greedy_generate

    def counting(backbone, hidden, state, stages, max_new_tokens, eos, pad, marks=None, **kw):  # type: ignore[no-untyped-def]
        calls.append(max_new_tokens)
        return real(backbone, hidden, state, stages, max_new_tokens, eos, pad, marks, **kw)

    monkeypatch.setattr(module, "greedy_generate", counting)
    model = make_model(tokenizer, tiny_hybrid(vocab_size=512), max_new_tokens=3)
    assert any(isinstance(cb, EfficiencyMonitor) for cb in model.configure_callbacks())  # every run has one
    logged = _logged(model, monkeypatch)
    monitor = EfficiencyMonitor()
    batch = make_batch(tokenizer, [2, 1], ["A", "B"])
    for i in range(2):
        monitor.on_test_batch_start(None, model, batch, i)  # type: ignore[arg-type]
        model.test_step(batch, i)
        monitor.on_test_batch_end(None, model, None, batch, i)  # type: ignore[arg-type]
    assert calls == [3, 3, 3]  # the warm-up generation, then the two scored ones
    prefill, kw = logged["test/eff/prefill_ms"]
    assert prefill > 0 and kw["batch_size"] == 2
    assert monitor.last["prefill_ms"] == prefill and monitor.last["decode_ms"] >= 0
    memory, kw = logged["test/eff/peak_mem_mb"]
    assert memory > 10 and kw["reduce_fx"] == "max"  # CPU: the process's peak RSS in MiB
    assert model.efficiency_marks is None  # handed back after the batch


def test_a_split_that_does_not_generate_is_not_timed(tokenizer, monkeypatch) -> None:  # noqa: F811
    model = make_model(tokenizer, tiny_hybrid(vocab_size=512), generate_in=["test"])
    logged = _logged(model, monkeypatch)
    monitor = EfficiencyMonitor()
    batch = make_batch(tokenizer, [1], ["A"])
    monitor.on_validation_batch_start(None, model, batch, 0)  # type: ignore[arg-type]
    model.validation_step(batch, 0)
    monitor.on_validation_batch_end(None, model, None, batch, 0)  # type: ignore[arg-type]
    assert not monitor.warm and "val/eff/prefill_ms" not in logged and monitor.last == {}


@torch.no_grad()
def _naive_greedy(model: Any, batch: Any, steps: int) -> list[list[int]]:
    """Greedy tokens from a full forward over prompt + tokens so far at every step (no cache)."""
    hidden, state, _ = model.embed_batch(batch, prompt_only=True)
    out = []
    for row in range(batch.batch_size):
        keep = state.mask[row]
        h = hidden[row : row + 1, keep]
        row_state = type(state)(
            mask=state.mask[row : row + 1, keep],
            kind=state.kind[row : row + 1, keep],
            segment=torch.zeros_like(state.segment[row : row + 1, keep]),
            position=state.position[row : row + 1, keep],
            origin=state.origin[row : row + 1, keep],
            segment_row=torch.zeros(1, dtype=torch.long),
            num_vision_orig=state.num_vision_orig[row : row + 1],
        )
        tokens: list[int] = []
        for _ in range(steps):
            res = model.backbone(h, row_state, stages=model.stages())
            tok = int(model.backbone.logits(res.hidden[:, -1]).argmax(-1))
            tokens.append(tok)
            if tok == model.tokenizer.eos_token_id:
                break
            t = row_state.mask.shape[1]
            h = torch.cat([h, model.backbone.embed(torch.tensor([[tok]]))], 1)
            row_state = type(row_state)(
                mask=torch.ones(1, t + 1, dtype=torch.bool),
                kind=torch.cat([row_state.kind, row_state.kind[:, -1:]], 1),
                segment=torch.zeros(1, t + 1, dtype=torch.long),
                position=torch.cat([row_state.position, row_state.position[:, -1:] + 1], 1),
                origin=torch.cat([row_state.origin, row_state.origin[:, -1:] + 1], 1),
                segment_row=row_state.segment_row,
                num_vision_orig=row_state.num_vision_orig,
            )
        out.append(tokens)
    return out


def test_generate_matches_a_naive_full_recompute_greedy_loop(tokenizer) -> None:  # noqa: F811
    torch.manual_seed(3)
    model = make_model(tokenizer, tiny_hybrid(vocab_size=512), max_new_tokens=5)
    batch = make_batch(tokenizer, [2, 3], ["A", "B red"])
    texts, _ = model.generate(batch)
    expected = [
        tokenizer.decode([t for t in row if t != tokenizer.eos_token_id], skip_special_tokens=True).strip()
        for row in _naive_greedy(model, batch, 5)
    ]
    assert texts == expected


def test_generate_with_compression_is_deterministic(tokenizer) -> None:  # noqa: F811
    model = make_model(tokenizer, tiny_hybrid(vocab_size=512), [TokenDrop(layer=1, keep=0.25)], max_new_tokens=3)
    batch = make_batch(tokenizer, [4, 2], ["A", "B"])
    assert model.generate(batch)[0] == model.generate(batch)[0]
