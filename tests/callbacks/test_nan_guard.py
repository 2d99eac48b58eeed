"""NanGuard on a toy module: bad steps skipped, stop after `patience`, no checkpoint from a bad state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_viper.callbacks.nan_guard import NanGuard, NonFiniteTrainingError

NAN = float("nan")


class ToyModule(LightningModule):
    """Linear regression whose loss is made NaN at chosen steps (``trainer.global_step`` before the step)."""

    def __init__(self, nan_steps: set[int], loss_only: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.spare = torch.nn.Parameter(torch.zeros(2))  # outside the loss: set NaN by `corrupt_at`
        self.corrupt_at: int | None = None
        self.nan_steps = nan_steps
        self.loss_only = loss_only  # NaN loss with finite gradients
        self.weights: dict[int, torch.Tensor] = {}  # global_step after each batch -> weights

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if self.global_step in self.nan_steps:
            loss = loss + torch.tensor(NAN) if self.loss_only else loss * NAN
        return loss

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.weights[self.global_step] = self.layer.weight.detach().clone()
        if self.global_step == self.corrupt_at:
            with torch.no_grad():
                self.spare.fill_(NAN)  # as an overflow would, with the loss still finite

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, module: ToyModule, guard: NanGuard, max_steps: int, *extra: ModelCheckpoint) -> Trainer:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    trainer = Trainer(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        callbacks=[guard, *extra],
        enable_checkpointing=bool(extra),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    return trainer


def test_bad_steps_below_patience_are_skipped(tmp_path: Path) -> None:
    module = ToyModule(nan_steps={2, 3})
    trainer = _fit(tmp_path, module, NanGuard(patience=3), max_steps=6)
    assert trainer.global_step == 6
    assert torch.equal(module.weights[4], module.weights[2]), "steps 2 and 3 left the weights unchanged"
    assert not torch.equal(module.weights[5], module.weights[4]), "training went on after them"
    adam_steps = trainer.optimizers[0].state[module.layer.weight]["step"]
    assert int(adam_steps) == 4, "the optimizer skipped the two bad steps"
    assert torch.isfinite(module.layer.weight).all()


def test_stops_after_patience_naming_the_steps(tmp_path: Path) -> None:
    module = ToyModule(nan_steps=set(range(3, 100)))
    expected = r"training stopped at step 5: loss nan, gradient norm nan \(3 consecutive bad step\(s\): steps 3-5"
    with pytest.raises(NonFiniteTrainingError, match=expected):
        _fit(tmp_path, module, NanGuard(patience=3), max_steps=20)
    assert torch.equal(module.layer.weight.detach(), module.weights[3]), "weights are those after step 2"


def test_non_finite_loss_with_finite_gradients_counts(tmp_path: Path) -> None:
    module = ToyModule(nan_steps={1}, loss_only=True)
    with pytest.raises(NonFiniteTrainingError, match=r"training stopped at step 1: loss nan"):
        _fit(tmp_path, module, NanGuard(patience=1), max_steps=5)


def test_no_checkpoint_is_written_from_a_bad_step(tmp_path: Path) -> None:
    module = ToyModule(nan_steps=set(range(3, 100)))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    with pytest.raises(NonFiniteTrainingError, match=r"step 3: .*a checkpoint came due and was not written"):
        _fit(tmp_path, module, NanGuard(patience=3), 20, ckpt)
    files = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert files == ["epoch=0-step=3.ckpt", "last.ckpt"], files
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3, "last.ckpt is the one written after the last good step (2)"
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    module = ToyModule(nan_steps=set())
    module.corrupt_at = 2
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_last=True)
    expected = r"step 4: non-finite weights in 1 tensor\(s\): spare; a checkpoint came due"
    with pytest.raises(NonFiniteTrainingError, match=expected):
        _fit(tmp_path, module, NanGuard(), 20, ckpt)
    assert not list((tmp_path / "ckpt").glob("*.ckpt")), "the save at step 4 was refused"


def test_without_skipping_the_optimizer_steps_on_nan_gradients(tmp_path: Path) -> None:
    module = ToyModule(nan_steps={2})
    _fit(tmp_path, module, NanGuard(patience=5, skip_bad_steps=False), max_steps=4)
    assert torch.isnan(module.layer.weight).all(), "AdamW stepped on the NaN gradients"


def test_patience_must_be_positive() -> None:
    with pytest.raises(ValueError, match="patience"):
        NanGuard(patience=0)
