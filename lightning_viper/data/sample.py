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
from lightning_viper.data.tasks import TASKS

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PLACEHOLDER = re.compile(r"<(image|video)>\s*")
_LETTER = re.compile(r"^\(?([A-Z])(?:[.):]|$)")  # "C", "C.", "C) blue", "(C) blue"
_OPTION_PREFIX = re.compile(r"^\(?[A-Z][.):]\s*")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
TIME_TOLERANCE_S = 1.0  # a window or span may end this much past the video (rounded annotations)


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


def parse_annotation(raw: bytes, key: str = "?") -> dict[str, Any]:
    """Parse and validate a sample's JSON; fill ``question``/``answer`` from ``conversations`` and the
    mcq ``answer`` letter / ``answer_index`` from each other. Every message names the sample ``key``
    and the annotation key at fault. Times are checked against the video in :func:`check_times`."""
    try:
        ann = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise BadSample(f"sample {key!r}: bad JSON: {exn}") from exn
    if not isinstance(ann, dict):
        raise BadSample(f"sample {key!r}: bad JSON: the annotation is not an object")
    task = ann.get("task")
    if task not in TASKS:
        raise BadSample(f"sample {key!r}: bad task {task!r}: expected one of {TASKS}")
    duration = ann.get("duration")
    if duration is not None and (not isinstance(duration, int | float) or isinstance(duration, bool) or duration < 0):
        raise BadSample(f"sample {key!r}: annotation 'duration' must be seconds (a number >= 0), got {duration!r}")
    _fill_from_conversations(ann)
    if not isinstance(ann.get("question"), str):
        raise BadSample(f"sample {key!r}: missing question")
    if task == "mcq":
        _check_mcq(ann, key)
    if not isinstance(ann.get("answer"), str) or not ann["answer"].strip():
        raise BadSample(f"sample {key!r}: missing answer")
    if task == "grounding":
        if ann.get("span") is None:
            raise BadSample(f"sample {key!r}: grounding sample needs 'span' [start_s, end_s], got None")
        _time_range(ann, "span", key)
    if ann.get("window") is not None:
        _time_range(ann, "window", key)
    _check_groups(ann.get("groups"), key)
    return ann


def _check_groups(groups: Any, key: str) -> None:
    """``groups`` (optional): what the test accuracy is broken down by, e.g. ``{"duration": "short",
    "task": "Counting Problem"}``; a value may be a list (a sample in several task types)."""
    if groups is None:
        return
    ok = isinstance(groups, dict) and all(
        isinstance(k, str) and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)))
        for k, v in groups.items()
    )
    if not ok:
        raise BadSample(
            f"sample {key!r}: annotation 'groups' must map names to a string or a list of strings, got {groups!r}"
        )


def _fill_from_conversations(ann: dict[str, Any]) -> None:
    convs = ann.get("conversations")
    if ("question" not in ann or "answer" not in ann) and isinstance(convs, list) and len(convs) >= 2:
        human = next((c for c in convs if isinstance(c, dict) and c.get("from") in ("human", "user")), None)
        gpt = next((c for c in convs if isinstance(c, dict) and c.get("from") in ("gpt", "assistant")), None)
        if human is not None and gpt is not None:
            ann.setdefault("question", _PLACEHOLDER.sub("", str(human.get("value", ""))).strip())
            ann.setdefault("answer", str(gpt.get("value", "")).strip())


def _named_option(answer: str, options: list[Any]) -> int | None:
    """Index of the option an mcq ``answer`` names: its letter ("C", "c", "C.", "(C) blue") or the
    text of one option ("blue" for "C. blue"); None when it names none."""
    text = answer.strip()
    letter = _LETTER.match(text.upper() if len(text) == 1 else text)
    if letter is not None:
        return OPTION_LETTERS.index(letter.group(1))
    bare = [_OPTION_PREFIX.sub("", str(o)).strip().rstrip(".").casefold() for o in options]
    wanted = _OPTION_PREFIX.sub("", text).strip().rstrip(".").casefold()
    return bare.index(wanted) if wanted in bare else None


def _check_mcq(ann: dict[str, Any], key: str) -> None:
    """Options present; ``answer`` and ``answer_index`` in range and naming the same option."""
    options = ann.get("options")
    if not isinstance(options, list) or not options:
        raise BadSample(f"sample {key!r}: mcq sample without 'options'")
    index, answer = ann.get("answer_index"), ann.get("answer")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise BadSample(f"sample {key!r}: mcq 'answer_index' must be an integer, got {index!r}")
    named = None
    if isinstance(answer, str) and answer.strip():
        named = _named_option(answer, options)
        if named is None:
            raise BadSample(
                f"sample {key!r}: mcq 'answer' {answer!r} is neither an option letter nor the text of one of the "
                f"{len(options)} options"
            )
    for field_name, value in (("answer", named), ("answer_index", index)):
        if value is not None and not 0 <= value < len(options):
            raise BadSample(
                f"sample {key!r}: mcq {field_name!r} (index {value}) out of range for {len(options)} options"
            )
    if named is not None and index is not None and named != index:
        raise BadSample(
            f"sample {key!r}: mcq 'answer' {answer!r} names option {OPTION_LETTERS[named]} but 'answer_index' is "
            f"{index} (option {OPTION_LETTERS[index]}): make them agree, or give only one of them"
        )
    if named is None and index is None:
        raise BadSample(f"sample {key!r}: mcq sample needs 'answer' (a letter) or 'answer_index'")
    ann["answer_index"] = index if index is not None else named
    ann["answer"] = OPTION_LETTERS[ann["answer_index"]]


def _time_range(ann: dict[str, Any], name: str, key: str) -> tuple[float, float]:
    """``ann[name]`` as [start_s, end_s] numbers with 0 <= start <= end."""
    value = ann.get(name)
    pair = isinstance(value, list | tuple) and len(value) == 2
    if not pair or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value or ()):
        raise BadSample(f"sample {key!r}: annotation {name!r} must be [start_s, end_s] (two numbers), got {value!r}")
    start, end = (float(v) for v in value or ())
    if start > end:
        raise BadSample(f"sample {key!r}: annotation {name!r} {value!r} ends before it starts")
    if start < 0:
        raise BadSample(f"sample {key!r}: annotation {name!r} {value!r} starts before the video (negative time)")
    return start, end


def check_times(ann: dict[str, Any], duration: float, key: str) -> None:
    """Reject a ``window`` or grounding ``span`` that is not inside the video [0, duration] (a
    tolerance of :data:`TIME_TOLERANCE_S` past the end is allowed for rounded annotations)."""
    if duration <= 0:
        return
    for name in ("window", "span"):
        if ann.get(name) is None:
            continue
        start, end = _time_range(ann, name, key)
        if start >= duration or end > duration + TIME_TOLERANCE_S:
            raise BadSample(
                f"sample {key!r}: annotation {name!r} {list(ann[name])!r} is outside the video, which lasts "
                f"{duration:.2f} s: fix the annotation or pair it with the right video"
            )


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
        media_ext = _media_member(raw, key)
        ann = parse_annotation(raw["json"], key)
        video = self._decode(raw[media_ext], media_ext, ann, key)
        check_times(ann, video.duration, key)
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
            "groups": ann.get("groups") or {},
            "padding": False,
        }
        prompt_text = format_question(ann, num_frames, duration, self.grounding_context)
        return Sample(key, video.frames, video.timestamps.to(torch.float32), prompt_text, ann["answer"], meta)

    def _decode(self, data: bytes, media_ext: str, ann: dict[str, Any], key: str) -> DecodedVideo:
        try:
            if media_ext in IMAGE_EXTENSIONS:
                return decode_image(data, image_size=self.image_size)
            window = ann.get("window")
            start, end = (float(window[0]), float(window[1])) if window is not None else (None, None)
            return decode_video(
                data,
                image_size=self.image_size,
                fps=self.fps,
                num_frames=self.num_frames,
                max_frames=self.max_frames,
                start=start,
                end=end,
            )
        except DecodeError as exn:
            raise BadSample(f"sample {key!r}: undecodable {media_ext}: {exn}") from exn


def _media_member(raw: dict[str, Any], key: str) -> str:
    """The media extension of a raw sample that has both members; else a :class:`BadSample` saying
    what is missing, or that the member names put a dot inside the key."""
    media_ext = next((e for e in MEDIA_EXTENSIONS if e in raw), None)
    if "json" in raw and media_ext is not None:
        return media_ext
    dotted = [
        n for n in raw if not n.startswith("__") and "." in n and n.rsplit(".", 1)[1] in ("json", *MEDIA_EXTENSIONS)
    ]
    if dotted:
        ext = dotted[0]
        fixed = f"{key}_{ext.rsplit('.', 1)[0].replace('.', '_')}.{ext.rsplit('.', 1)[1]}"
        raise BadSample(
            f"sample {key!r}: the member name {key}.{ext} has a dot inside its key: WebDataset splits a name "
            f"at its first dot, so it reads key {key!r} with extension {ext!r}. Rename the files so the key holds "
            f"only letters, digits, '_' and '-' (e.g. {fixed}); viper pack makes such keys"
        )
    if "json" not in raw:
        raise BadSample(f"sample {key!r}: missing .json annotation")
    raise BadSample(f"sample {key!r}: missing media: no member with extension in {MEDIA_EXTENSIONS}")
