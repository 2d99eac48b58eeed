"""One shard sample (``<key>.<video|image ext>`` + ``<key>.json``) -> validated, decoded :class:`Sample`.

Only whitelisted media extensions are decoded and the annotation is parsed as JSON; nothing is ever
unpickled. Any problem raises :class:`BadSample` with a reason; the dataset counts and skips it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_viper.data.decode import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DecodedVideo,
    DecodeError,
    decode_image,
    decode_video,
)

TASKS = ("mcq", "qa", "caption", "grounding", "count")
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PLACEHOLDER = re.compile(r"<(image|video)>\s*")


class BadSample(ValueError):
    """A sample that cannot be used; the message says why (used as the skip reason)."""


@dataclass
class Sample:
    """A decoded sample. frames (F, 3, S, S) uint8; timestamps (F,) seconds; prompt_text is the
    question as it goes into the template (options and grounding context appended)."""

    key: str
    frames: Tensor  # (F, 3, S, S) uint8
    timestamps: Tensor  # (F,) float32
    prompt_text: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0  # bad samples dropped just before this one (same worker)


def parse_annotation(raw: bytes) -> dict[str, Any]:
    """Parse and validate a sample's JSON; fill ``question``/``answer`` from ``conversations`` and the
    mcq ``answer`` letter from ``answer_index`` when missing."""
    try:
        ann = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise BadSample(f"bad JSON: {exn}") from exn
    if not isinstance(ann, dict):
        raise BadSample("bad JSON: the annotation is not an object")
    task = ann.get("task")
    if task not in TASKS:
        raise BadSample(f"bad task {task!r}: expected one of {TASKS}")
    convs = ann.get("conversations")
    if ("question" not in ann or "answer" not in ann) and isinstance(convs, list) and len(convs) >= 2:
        human = next((c for c in convs if isinstance(c, dict) and c.get("from") in ("human", "user")), None)
        gpt = next((c for c in convs if isinstance(c, dict) and c.get("from") in ("gpt", "assistant")), None)
        if human is not None and gpt is not None:
            ann.setdefault("question", _PLACEHOLDER.sub("", str(human.get("value", ""))).strip())
            ann.setdefault("answer", str(gpt.get("value", "")).strip())
    if not isinstance(ann.get("question"), str):
        raise BadSample("missing question")
    if task == "mcq":
        options = ann.get("options")
        if not isinstance(options, list) or not options:
            raise BadSample("mcq sample without options")
        index = ann.get("answer_index")
        if index is None and isinstance(ann.get("answer"), str):
            letter = ann["answer"].strip()[:1].upper()
            index = OPTION_LETTERS.find(letter) if letter else -1
        if not isinstance(index, int) or not 0 <= index < len(options):
            raise BadSample(f"answer index {index!r} out of range for {len(options)} options")
        ann["answer_index"] = index
        ann["answer"] = OPTION_LETTERS[index]
    if not isinstance(ann.get("answer"), str) or not ann["answer"].strip():
        raise BadSample("missing answer")
    if task == "grounding":
        span = ann.get("span")
        if not (isinstance(span, list | tuple) and len(span) == 2 and all(isinstance(v, int | float) for v in span)):
            raise BadSample(f"grounding sample needs span [start_s, end_s], got {span!r}")
        if span[0] > span[1]:
            raise BadSample(f"grounding span {span!r} ends before it starts")
    return ann


def format_question(ann: dict[str, Any], num_frames: int, duration: float, grounding_context: bool) -> str:
    """Question text for the template: options on their own lines (mcq), and for grounding the
    video length and number of sampled frames (as the TimeViper grounding prompt does)."""
    text = ann["question"].strip()
    if ann["task"] == "mcq":
        opts = [str(o).strip() for o in ann["options"]]
        if not all(re.match(r"^[A-Z][.)]", o) for o in opts):
            opts = [f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(opts)]
        text = "\n".join([text, *opts, "Answer with the option's letter."])
    elif ann["task"] == "grounding" and grounding_context:
        text = f"The video lasts {duration:.0f} seconds and {num_frames} frames were sampled. {text}"
    return text


@dataclass
class SampleDecoder:
    """Turns a raw WebDataset sample (dict of extension -> bytes) into a :class:`Sample`.

    Args mirror :func:`decode_video`. ``grounding_context`` prefixes grounding questions with the
    video length and frame count.
    """

    image_size: int
    fps: float | None = 1.0
    num_frames: int | None = None
    max_frames: int | None = 256
    grounding_context: bool = True

    def __call__(self, raw: dict[str, Any]) -> Sample:
        key = str(raw.get("__key__", "?"))
        if "json" not in raw:
            raise BadSample("missing .json annotation")
        ann = parse_annotation(raw["json"])
        media_ext = next((e for e in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS if e in raw), None)
        if media_ext is None:
            raise BadSample(f"missing media: no member with extension in {VIDEO_EXTENSIONS + IMAGE_EXTENSIONS}")
        try:
            if media_ext in IMAGE_EXTENSIONS:
                video: DecodedVideo = decode_image(raw[media_ext], image_size=self.image_size)
            else:
                window = ann.get("window")
                start, end = (float(window[0]), float(window[1])) if isinstance(window, list | tuple) else (None, None)
                video = decode_video(
                    raw[media_ext],
                    image_size=self.image_size,
                    fps=self.fps,
                    num_frames=self.num_frames,
                    max_frames=self.max_frames,
                    start=start,
                    end=end,
                )
        except DecodeError as exn:
            raise BadSample(f"undecodable {media_ext}: {exn}") from exn
        num_frames = int(video.frames.shape[0])
        duration = float(ann.get("duration") or video.duration)
        meta = {
            "key": key,
            "task": ann["task"],
            "question": ann["question"],
            "answer": ann["answer"],
            "options": ann.get("options"),
            "answer_index": ann.get("answer_index"),
            "span": list(ann["span"]) if ann.get("span") is not None else None,
            "duration": duration,
            "num_frames": num_frames,
            "fps": video.fps,
            "timestamps": [round(float(t), 4) for t in video.timestamps],
            "source": ann.get("source"),
            "padding": False,
        }
        prompt_text = format_question(ann, num_frames, duration, self.grounding_context)
        return Sample(key, video.frames, video.timestamps.to(torch.float32), prompt_text, ann["answer"], meta)
