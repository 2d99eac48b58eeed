"""``VideoLM``: vision encoder -> projector -> LLM backbone with compression stages."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from lightning_viper.backbones.base import Backbone, BackboneOutput, MixerOverride
from lightning_viper.batch import VideoBatch
from lightning_viper.compression.base import CompressionStage
from lightning_viper.encoders.base import VisionEncoder
from lightning_viper.encoders.batching import FrameSequence, map_frames
from lightning_viper.generation import greedy_generate
from lightning_viper.metrics import TaskMetrics
from lightning_viper.ops.profiling import Marks, region
from lightning_viper.optim import cosine_with_warmup, param_groups
from lightning_viper.projectors.base import Projector
from lightning_viper.sequence import SequenceState, gather_tokens
from lightning_viper.splice import pack_rows, splice
from lightning_viper.text.tokenizer import video_token_id

log = logging.getLogger(__name__)
ModuleName = Literal["encoder", "projector", "backbone", "compression"]
Split = Literal["train", "val", "test"]  # a data split; compression stages are ``VideoLM.stages()``


class VideoLM(LightningModule):
    """A video language model built from parts chosen in YAML.

    Args:
        encoder: frames -> patch features; frozen unless "encoder" is in ``trainable``.
        projector: patch features -> vision tokens of the backbone's width.
        backbone: the LLM; owns its layer loop, where ``compression`` stages act.
        compression: stages applied before their layers, in order (empty = no compression).
        trainable: which parts train (stage 1: ["projector"]; stage 2: all but the encoder).
        lr: base learning rate; ``module_lr`` overrides it per part (TransV: 5e-5 in the paper).
        warmup_ratio: fraction of the run spent in linear warmup before the cosine decay.
        max_new_tokens: generation budget in validation/test/predict.
        generate_in: splits that generate answers and score task metrics ("val" costs time).
        tokenizer: normally taken from the datamodule at setup; needed to decode generations.
        pack_sequences: in training and teacher-forced evaluation, pack the batch into one row
            of per-sample segments (no padding compute; state and attention reset per sample).
        init_from: a Lightning checkpoint of an earlier stage to take ``init_parts`` from (e.g.
            stage 2 starts from stage 1's projector); every key of those parts must be present.
        decode_graphs: generate over static KV caches with the decode step captured as a CUDA
            graph (on CUDA; eager elsewhere, same tokens): :func:`~lightning_viper.generation.greedy_generate`.
    """

    def __init__(
        self,
        encoder: VisionEncoder,
        projector: Projector,
        backbone: Backbone,
        compression: list[CompressionStage] | None = None,
        trainable: list[ModuleName] | None = None,
        lr: float = 1e-5,
        module_lr: dict[str, float] | None = None,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_ratio: float = 0.03,
        max_new_tokens: int = 16,
        generate_in: list[Split] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        init_from: str | None = None,
        init_parts: list[ModuleName] | None = None,
        pack_sequences: bool = False,
        decode_graphs: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "projector", "backbone", "compression", "tokenizer"])
        self.encoder = encoder
        self.projector = projector
        self.backbone = backbone
        self.projector.bind(encoder.embed_dim, backbone.hidden_size)
        self.compression = nn.ModuleList(compression or [])
        self.projector.attach_encoder(encoder)  # VisionZip reads the encoder's attention
        for stage in self.stages():
            stage.bind(backbone)
        self._validate_schedule()
        self.trainable = list(trainable if trainable is not None else ["projector", "backbone", "compression"])
        for name, part in self.parts().items():
            part.requires_grad_(name in self.trainable)
        if init_from is not None:
            self.load_parts(init_from, list(init_parts or ["projector"]))
        self.tokenizer = tokenizer
        self.efficiency_marks: Marks | None = None  # set by EfficiencyMonitor for a batch it times
        self.metrics = nn.ModuleDict({s: TaskMetrics() for s in ("val", "test")})
        self.generate_in = set(generate_in if generate_in is not None else ["test"])

    # ---- composition -----------------------------------------------------------------------
    def parts(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.encoder,
            "projector": self.projector,
            "backbone": self.backbone,
            "compression": self.compression,
        }

    def stages(self) -> list[CompressionStage]:
        """The compression stages, in order."""
        return [cast(CompressionStage, s) for s in self.compression]

    def _validate_schedule(self) -> None:
        from lightning_viper.compression.schedule import validate_schedule

        validate_schedule(self.stages(), self.backbone)

    def strategy_name(self) -> str:
        """A readable name of the token reduction (projector merging + compression stages), e.g. for
        MLflow run names and tags."""
        merge = self.projector.describe()
        parts = ([merge] if merge else []) + [s.describe() for s in self.stages()]
        return " + ".join(parts) if parts else "none"

    def load_parts(self, path: str, parts: list[str]) -> None:
        """Copy the weights of ``parts`` from a Lightning checkpoint; strict within each part."""
        from lightning_viper.backbones.loading import CheckpointError, load_strict
        from lightning_viper.checkpoint_io import load_checkpoint

        if not os.path.isfile(path):
            raise CheckpointError(f"init_from checkpoint {path!r} does not exist: train the earlier stage first")
        checkpoint = load_checkpoint(path, "init_from checkpoint")  # weights_only: never runs pickled code
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"init_from checkpoint {path!r} has no 'state_dict': not a Lightning checkpoint")
        state = checkpoint["state_dict"]
        for name in parts:
            prefix = f"{name}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            load_strict(self.parts()[name], sub, source=f"{path} [{name}]")
        log.info("initialised %s from %s", parts, path)

    def parameter_counts(self) -> dict[str, int]:
        """``model/params_<part>`` for every part, plus total and trainable counts."""
        counts = {
            f"model/params_{name}": sum(p.numel() for p in part.parameters()) for name, part in self.parts().items()
        }
        counts["model/params_total"] = sum(p.numel() for p in self.parameters())
        counts["model/params_trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return counts

    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None)
        if self.tokenizer is None and datamodule is not None:
            self.tokenizer = getattr(datamodule, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("VideoLM needs a tokenizer: use a datamodule that exposes `.tokenizer` or pass one")
        if len(self.tokenizer) > self.backbone.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the backbone's vocab_size is "
                f"{self.backbone.vocab_size}: raise the backbone's vocab_size"
            )
        log.info("parameters: %s; trainable parts: %s", self.parameter_counts(), self.trainable)

    def train(self, mode: bool = True) -> VideoLM:
        super().train(mode)
        if "encoder" not in getattr(self, "trainable", []):
            self.encoder.eval()  # frozen: no dropout / batch-statistics updates
        return self

    # ---- forward pieces --------------------------------------------------------------------
    def encode_video(self, frames: FrameSequence) -> Tensor:
        """(F, 3, H, W) uint8 -> (F, N, D) vision tokens.

        Encoder and projector run per micro-batch of frames (:func:`map_frames`), so only the
        (much smaller) projected tokens of the whole video are alive at once, never all patch
        features. ``frames`` may live on the host (moved a micro-batch at a time)."""
        step = max(1, int(getattr(self.encoder, "micro_batch", len(frames)) or 1))
        with region("encode"):
            return map_frames(self._encode_chunk, frames, step, self.device)  # (F, N, D)

    def _encode_chunk(self, frames: Tensor) -> Tensor:
        """(f, 3, H, W) -> (f, N, D): encoder (no grad unless it trains) then projector."""
        with region("encoder"), torch.set_grad_enabled(torch.is_grad_enabled() and "encoder" in self.trainable):
            features = self.encoder(frames)  # (f, P, Dv)
        with region("projector"):
            tokens: Tensor = self.projector(features)  # (f, N, D)
        return tokens

    def embed_batch(self, batch: VideoBatch, prompt_only: bool) -> tuple[Tensor, SequenceState, Tensor]:
        """Vision tokens spliced into text embeddings -> (B, T, D), state, source text columns."""
        assert self.tokenizer is not None
        tokens = self.encode_video(batch.frames)  # (F, N, D)
        n = tokens.shape[1]
        ids = batch.input_ids
        lengths = batch.prompt_lengths if prompt_only else batch.attention_mask.sum(1)
        if prompt_only:
            ids = ids[:, : int(lengths.max())]
            col = torch.arange(ids.shape[1], device=ids.device)
            ids = torch.where(col < lengths.unsqueeze(1), ids, torch.full_like(ids, self.tokenizer.pad_token_id or 0))
        with region("splice"):
            text = self.backbone.embed(ids)  # (B, L, D)
            return splice(
                text,
                ids,
                lengths,
                batch.prompt_lengths,
                tokens.flatten(0, 1).to(text.dtype),
                batch.frames_per_sample * n,
                video_token_id(self.tokenizer),
            )

    def forward(
        self, batch: VideoBatch, mixers: Mapping[int, MixerOverride] | None = None
    ) -> tuple[Tensor, BackboneOutput]:
        """Teacher-forced pass; returns the loss on response tokens and the backbone output.
        ``mixers``: overrides of layers' token mixers (the analysis, ``Backbone.forward``)."""
        hidden, state, source = self.embed_batch(batch, prompt_only=False)
        labels = torch.where(source >= 0, batch.labels.gather(1, source.clamp(min=0)), -100)  # (B, T)
        if self.hparams["pack_sequences"]:
            hidden, state, labels = pack_rows(hidden, state, labels)  # (1, N, D)
        out = self.backbone(hidden, state, stages=self.stages(), mixers=mixers)
        labels = gather_tokens(labels, out.state, -100)  # (B, T'), follows dropped tokens
        target = labels[:, 1:]  # next-token targets
        sel = target != -100
        if not bool(sel.any()):
            raise ValueError("batch has no answer tokens to learn from: check the template and labels")
        logits = self.backbone.logits(out.hidden[:, :-1][sel])  # (N, V)
        return F.cross_entropy(logits.float(), target[sel]), out

    # ---- steps -----------------------------------------------------------------------------
    def _step(self, batch: VideoBatch, split: Split) -> tuple[Tensor, list[dict[str, Any]]]:
        """Loss (logged) and, where ``split`` is in ``generate_in``, one scored answer per sample."""
        loss, out = self(batch)
        bs = batch.batch_size
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=bs, sync_dist=split != "train")
        if batch.skipped:
            self.log(f"{split}/skipped_samples", float(batch.skipped), reduce_fx="sum", batch_size=bs)
        if split == "train":
            for i, rec in enumerate(out.stages):
                self.log(
                    f"train/eff/stage{i}_L{rec.layer}_vision_kept",
                    rec.vision_after / max(1, rec.vision_before),
                    batch_size=bs,
                )
        rows = self._generate_and_score(batch, split) if split in self.generate_in else []
        return loss, rows

    def training_step(self, batch: VideoBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: VideoBatch, batch_idx: int) -> Tensor:
        return self._step(batch, "val")[0]

    def test_step(self, batch: VideoBatch, batch_idx: int) -> dict[str, Any]:
        """``{"loss", "predictions"}``: the rows reach callbacks such as ``PredictionWriter``."""
        loss, rows = self._step(batch, "test")
        return {"loss": loss, "predictions": rows}

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> list[dict[str, Any]]:
        return self._generate_and_score(batch, None)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _log_metrics(self, split: Split) -> None:
        if split not in self.generate_in:
            return
        metric = cast(TaskMetrics, self.metrics[split])
        for key, value in metric.compute().items():
            self.log(f"{split}/{key}", value, sync_dist=False)
        metric.reset()

    # ---- generation and efficiency ---------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: VideoBatch) -> tuple[list[str], dict[str, float]]:
        """Greedy answers for the batch's prompts, plus token counts of the prefill.

        When ``efficiency_marks`` is set (the :class:`~lightning_viper.callbacks.EfficiencyMonitor`
        does, for the batches it times), it gets ``start`` before the frames are encoded and
        ``first_token`` / ``decoded`` from :func:`greedy_generate`; time, memory and the untimed
        warm-up are the callback's."""
        assert self.tokenizer is not None
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        if eos is None or pad is None:
            raise ValueError("the tokenizer needs eos and pad tokens for generation")
        marks = self.efficiency_marks
        if marks is not None:
            marks.mark("start")
        hidden, state, _ = self.embed_batch(batch, prompt_only=True)
        vision_in = int(state.vision_mask().sum())
        max_new = self.hparams["max_new_tokens"]
        graphs = bool(self.hparams.get("decode_graphs", False))
        result = greedy_generate(
            self.backbone, hidden, state, self.stages(), max_new, eos, pad, marks, graphs=graphs, donate=True
        )  # ``hidden`` is not read again: chunked prefill may write over it
        bs = batch.batch_size
        eff = {
            "frames": float(batch.frames_per_sample.float().mean()),
            "vision_tokens": vision_in / bs,
            "vision_tokens_final": float(result.prefill.state.vision_mask().sum()) / bs,
            "seq_len_final": float(result.prefill.state.mask.sum()) / bs,
        }
        for i, rec in enumerate(result.prefill.stages):
            eff[f"stage{i}_L{rec.layer}_vision_before"] = rec.vision_before / bs
            eff[f"stage{i}_L{rec.layer}_vision_after"] = rec.vision_after / bs
        texts = self.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        return [t.strip() for t in texts], eff

    def _generate_and_score(self, batch: VideoBatch, split: Split | None) -> list[dict[str, Any]]:
        predictions, eff = self.generate(batch)
        rows = []
        for pred, meta in zip(predictions, batch.meta, strict=True):
            if meta.get("padding", False):  # repeated samples that even out eval streams across ranks
                continue
            rows.append(
                {
                    "key": meta.get("key"),
                    "task": meta.get("task"),
                    "question": meta.get("question"),
                    "prediction": pred,
                    "answer": meta.get("answer"),
                    "score": TaskMetrics.score_one(pred, meta),
                    "groups": meta.get("groups") or {},  # duration bucket, task type: slice the file by them
                }
            )
        if split is not None:
            real = [i for i, m in enumerate(batch.meta) if not m.get("padding", False)]  # ranks pad eval streams
            cast(TaskMetrics, self.metrics[split]).update([predictions[i] for i in real], [batch.meta[i] for i in real])
            for key, value in eff.items():
                self.log(f"{split}/eff/{key}", value, batch_size=batch.batch_size)
        return rows

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = param_groups(
            {k: v for k, v in self.parts().items() if k in self.trainable},
            hp["lr"],
            hp["module_lr"] or {},
            hp["weight_decay"],
        )
        optimizer = torch.optim.AdamW(groups, lr=hp["lr"], betas=tuple(hp["betas"]))
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = cosine_with_warmup(optimizer, total, hp["warmup_ratio"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[Callback]:
        """Every run times its prefill and records peak memory (``{split}/eff/prefill_ms`` and
        ``peak_mem_mb``) after one untimed warm-up, without a callback entry in the recipe."""
        from lightning_viper.callbacks.efficiency import EfficiencyMonitor  # the package needs mlflow

        return [EfficiencyMonitor()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["strategy"] = self.strategy_name()
