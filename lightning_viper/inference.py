"""Answer questions about video files with a trained checkpoint: ``viper ask`` and the lmms-eval plugin.

:func:`load_inference` builds a recipe's ``VideoLM`` and datamodule (only those two: no trainer,
no logger, no MLflow store), loads a checkpoint strictly and takes the datamodule's tokenizer,
prompt template and frame sampling (``image_size``, ``fps``, ``num_frames``, ``max_frames``).
:meth:`Inference.ask` decodes a video file with the project's decoder at those settings and runs
``VideoLM.generate``: the compressed prefill of the recipe's stages, then greedy decoding.
:meth:`Inference.loglikelihood` scores a continuation after the video and a context with one
teacher-forced pass through the same stages.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from lightning import LightningDataModule
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from datamodules.video import VideoDataModule
from lightning_viper.backbones.loading import CheckpointError, load_strict
from lightning_viper.batch import VideoBatch
from lightning_viper.checkpoint_io import load_checkpoint
from lightning_viper.cli.guards import CONFIG_ERRORS, ConfigError, resolve_checkpoint, root_message
from lightning_viper.data.collate import VideoCollator
from lightning_viper.data.decode import DecodedVideo, DecodeError, decode_video
from lightning_viper.module import VideoLM
from lightning_viper.ops.profiling import Marks
from lightning_viper.text.templates import PromptTemplate

log = logging.getLogger(__name__)


class InferenceError(ValueError):
    """A recipe, checkpoint, video or question that cannot be used; the message says what to fix."""


@dataclass
class Answer:
    """One generated answer and what it cost."""

    text: str
    frames: int  # frames decoded from the video and encoded
    vision_tokens: int  # vision tokens entering the LLM (after the projector)
    vision_tokens_final: int  # vision tokens left after the last compression stage
    prompt_tokens: int  # all tokens of the prefill before compression (text + vision)
    decode_ms: float  # decoding and sampling the video file
    prefill_ms: float  # encoder + projector + compressed prefill, to the first token
    total_ms: float  # from opening the video to the decoded answer text
    stages: list[dict[str, int]] = field(default_factory=list)  # per stage: layer, vision before/after


@dataclass
class Inference:
    """A loaded checkpoint ready to answer; see the module docstring."""

    model: VideoLM
    tokenizer: PreTrainedTokenizerBase
    template: PromptTemplate
    image_size: int
    fps: float | None
    num_frames: int | None
    max_frames: int | None
    checkpoint: Path

    @property
    def device(self) -> torch.device:
        return self.model.device

    def decode(self, video: str | Path) -> DecodedVideo:
        """The video file's frames at the recipe's sampling; an unreadable file raises InferenceError."""
        path = Path(video)
        if not path.is_file():
            raise InferenceError(f"video {str(path)!r} does not exist: pass the path of a video file")
        try:
            return decode_video(
                path, image_size=self.image_size, fps=self.fps, num_frames=self.num_frames, max_frames=self.max_frames
            )
        except DecodeError as error:
            raise InferenceError(
                f"cannot read video {str(path)!r}: {error}. Pass a playable video file (mp4, mkv, webm, avi, mov)"
            ) from None

    def batch(self, frames: Tensor, context: str, continuation_ids: Sequence[int] = ()) -> VideoBatch:
        """One sample: the template's prompt around ``context`` (its ``<video>`` placeholder takes the
        frames), then ``continuation_ids`` as the labelled part. frames (F, 3, S, S) uint8."""
        try:
            prompt, _ = VideoCollator(self.tokenizer, self.template).encode(context, "")
        except ValueError as error:
            raise InferenceError(f"bad question {context!r}: {error}") from None
        ids = [*prompt, *continuation_ids]
        labels = [-100] * len(prompt) + list(continuation_ids)
        return VideoBatch(
            frames=frames,
            frames_per_sample=torch.tensor([frames.shape[0]], dtype=torch.long),  # (1,)
            input_ids=torch.tensor([ids], dtype=torch.long),  # (1, L)
            attention_mask=torch.ones(1, len(ids), dtype=torch.bool),  # (1, L)
            labels=torch.tensor([labels], dtype=torch.long),  # (1, L)
            prompt_lengths=torch.tensor([len(prompt)], dtype=torch.long),  # (1,)
            meta=[{"question": context}],
        ).to(self.device)

    def ask(
        self, video: str | Path, question: str, max_new_tokens: int | None = None, until: Sequence[str] = ()
    ) -> Answer:
        """Greedy answer to ``question`` about the video file, cut at the first of ``until``."""
        start = time.perf_counter()
        decoded = self.decode(video)
        decode_ms = (time.perf_counter() - start) * 1000.0
        batch = self.batch(decoded.frames, question)
        with _max_new_tokens(self.model, max_new_tokens):
            texts, eff, prefill_ms = _generate(self.model, batch)
        text = cut_at(texts[0], until)
        total_ms = (time.perf_counter() - start) * 1000.0
        stages = [
            {"layer": int(key.split("_L")[1].split("_")[0]), "before": int(eff[key]), "after": int(eff[after])}
            for key in eff
            if key.endswith("_vision_before") and (after := key.replace("_before", "_after")) in eff
        ]
        return Answer(
            text=text,
            frames=int(eff["frames"]),
            vision_tokens=int(eff["vision_tokens"]),
            vision_tokens_final=int(eff["vision_tokens_final"]),
            prompt_tokens=int(batch.prompt_lengths[0]) - 1 + int(eff["vision_tokens"]),
            decode_ms=decode_ms,
            prefill_ms=prefill_ms,
            total_ms=total_ms,
            stages=stages,
        )

    @torch.no_grad()
    def loglikelihood(self, frames: Tensor, context: str, continuation: str) -> tuple[float, bool]:
        """log p(continuation | video, context) summed over its tokens, and whether greedy decoding
        would produce exactly those tokens. frames (F, 3, S, S) uint8."""
        cont = list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if not cont:
            raise InferenceError(f"the continuation {continuation!r} has no tokens to score")
        batch = self.batch(frames, context, cont)
        hidden, state, _ = self.model.embed_batch(batch, prompt_only=False)  # (1, T, D)
        out = self.model.backbone(hidden, state, stages=self.model.stages())
        # stages drop only vision tokens, and the row is left-padded: its last len(cont) tokens are
        # the continuation, each predicted from the position before it
        logits = self.model.backbone.logits(out.hidden[0, -len(cont) - 1 : -1]).float()  # (N, V)
        target = torch.tensor(cont, device=logits.device)  # (N,)
        logprob = float(F.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum())
        return logprob, bool((logits.argmax(-1) == target).all())


def _generate(model: VideoLM, batch: VideoBatch) -> tuple[list[str], dict[str, float], float]:
    """``model.generate`` plus the time from encoding the frames to the first token (ms), read
    from the model's ``efficiency_marks`` (:class:`~lightning_viper.ops.profiling.Marks`)."""
    marks = Marks(model.device)
    model.efficiency_marks = marks
    try:
        texts, eff = model.generate(batch)
    finally:
        model.efficiency_marks = None
    return texts, eff, float(marks.elapsed_ms()["first_token"])


def cut_at(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (stripped)."""
    cut = min((i for s in until if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut].strip()


@contextmanager
def _max_new_tokens(model: VideoLM, value: int | None) -> Iterator[None]:
    """``VideoLM.generate`` reads its budget from ``hparams``: set it for one call, then restore."""
    if value is None:
        yield
        return
    old = model.hparams["max_new_tokens"]
    model.hparams["max_new_tokens"] = int(value)
    try:
        yield
    finally:
        model.hparams["max_new_tokens"] = old


def compression_override(compression: str | list[Any] | None) -> list[str]:
    """``--model.init_args.compression`` from a JSON/YAML list, or a file holding one (None: the recipe's)."""
    if compression is None:
        return []
    if isinstance(compression, str) and Path(compression).is_file():
        import yaml

        compression = yaml.safe_load(Path(compression).read_text())
    if isinstance(compression, str):
        try:
            compression = json.loads(compression)
        except json.JSONDecodeError as error:
            raise InferenceError(
                f"compression={compression!r} is neither a file nor a JSON list of stages ({error}); pass e.g. "
                '\'[{"class_path": "lightning_viper.compression.TransV", "init_args": {"layer": 3, "keep": 0.25}}]\''
            ) from None
    if not isinstance(compression, list):
        raise InferenceError(f"compression must be a list of stages (class_path + init_args), got {compression!r}")
    return [f"--model.init_args.compression={json.dumps(compression)}"]


@dataclass
class LoadedModel:
    """A recipe's model with a checkpoint's weights, its datamodule (built, not set up) and config."""

    model: VideoLM
    data: LightningDataModule
    config: Any  # the parsed recipe (fit subcommand's view)
    checkpoint: Path


def load_model(
    recipe: str | Path,
    ckpt_path: str,
    overrides: Sequence[str] = (),
    compression: str | list[Any] | None = None,
    device: str = "auto",
) -> LoadedModel:
    """Build only the recipe's model and datamodule (no trainer, logger or MLflow run), load
    ``ckpt_path`` (a file, ``last`` or ``best``) strictly, move the model to ``device`` in eval mode.

    ``overrides`` are CLI-style arguments applied to the recipe (``--config OVERLAY``,
    ``--data.init_args.max_frames=64``); ``compression`` replaces the recipe's stages.
    """
    from lightning_viper.cli.main import parse_recipe

    if not Path(recipe).is_file():
        raise InferenceError(f"recipe {str(recipe)!r} does not exist: pass --config RECIPE.yaml")
    args = [*overrides, *compression_override(compression), "--model.init_args.init_from=null"]
    try:
        with warnings.catch_warnings():  # parse_recipe passes args on purpose; argv belongs to the caller
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
            config = parse_recipe(recipe, *args)
    except SystemExit as error:  # jsonargparse has already printed what is wrong with the recipe
        raise InferenceError(f"recipe {recipe} (with {list(args)}) does not parse: see the message above") from error
    try:
        path = resolve_checkpoint(config, ckpt_path)
    except ConfigError as error:
        raise InferenceError(str(error)) from None
    model, data = _build(config)
    try:
        state = load_checkpoint(path, "checkpoint").get("state_dict")
        if state is None:
            raise CheckpointError(f"{path} has no 'state_dict': not a Lightning checkpoint of this project")
        load_strict(model, state, source=str(path))
    except CheckpointError as error:
        raise InferenceError(f"{error}; check that the checkpoint was trained with {recipe}") from None
    tokenizer = getattr(data, "tokenizer", None)
    if tokenizer is not None and len(tokenizer) > model.backbone.vocab_size:
        raise InferenceError(
            f"the recipe's tokenizer has {len(tokenizer)} tokens but the backbone only {model.backbone.vocab_size}"
        )
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    model = model.to(target).eval()
    model.tokenizer = tokenizer
    log.info("loaded %s (%s) on %s", path, model.strategy_name(), target)
    return LoadedModel(model, data, config, path)


def load_inference(
    recipe: str | Path,
    ckpt_path: str,
    overrides: Sequence[str] = (),
    compression: str | list[Any] | None = None,
    device: str = "auto",
) -> Inference:
    """:func:`load_model`, then the datamodule's tokenizer, template and frame sampling: an :class:`Inference`."""
    loaded = load_model(recipe, ckpt_path, overrides, compression, device)
    data = loaded.data
    if not isinstance(data, VideoDataModule):
        raise InferenceError(
            f"the recipe's data is a {type(data).__name__}: questions about video files need a VideoDataModule "
            "(its tokenizer, template and frame sampling)"
        )
    return Inference(
        model=loaded.model,
        tokenizer=data.tokenizer,
        template=data.template,
        image_size=int(data.image_size),
        fps=data.fps,
        num_frames=data.num_frames,
        max_frames=data.max_frames,
        checkpoint=loaded.checkpoint,
    )


def _build(config: Any) -> tuple[VideoLM, LightningDataModule]:
    """Instantiate only ``model`` and ``data`` of a parsed recipe."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=VideoLM)
    parser.add_argument("--data", type=LightningDataModule)
    try:
        parsed = parser.parse_object({"model": config["model"].as_dict(), "data": config["data"].as_dict()})
        built = parser.instantiate_classes(parsed)
    except CONFIG_ERRORS as error:
        raise InferenceError(f"cannot build the recipe's model and data: {root_message(error)}") from None
    return built.model, built.data
