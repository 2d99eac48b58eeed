"""Prompt templates, one per backbone family; picked in YAML by ``class_path``.

A template turns a question into the prompt text (holding the ``<video>`` placeholder exactly once,
some text before it and the question after it) and an answer into the target text (ending with the
family's end-of-turn token). The collate tokenizes both and makes sure the target ends with the
tokenizer's eos id.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lightning_viper.text.tokenizer import EOS_TOKEN, VIDEO_TOKEN


@runtime_checkable
class PromptTemplate(Protocol):
    """Prompt and answer formatting of one backbone family."""

    def prompt(self, question: str) -> str:
        """Prompt text: contains ``<video>`` exactly once, text before it, the question after it."""
        ...

    def answer(self, text: str) -> str:
        """Target text: the answer followed by the end-of-turn/eos token."""
        ...


def _check_question(question: str) -> str:
    if VIDEO_TOKEN in question:
        raise ValueError(f"the question must not contain {VIDEO_TOKEN}; the template places it: {question!r}")
    return question.strip()


class PlainTemplate:
    """Plain text for the demo tokenizer: ``Video: <video> Question: ... Answer:``."""

    def __init__(self, eos: str = EOS_TOKEN) -> None:
        self.eos = eos

    def prompt(self, question: str) -> str:
        return f"Video: {VIDEO_TOKEN}\nQuestion: {_check_question(question)}\nAnswer:"

    def answer(self, text: str) -> str:
        return f" {text.strip()}{self.eos}"


class NemotronTemplate:
    """Nemotron-H style turns: ``<SPECIAL_10>System ... <SPECIAL_11>User ... <SPECIAL_11>Assistant``.

    The role markers and eos default to the Nemotron-H chat format
    (``<SPECIAL_10>System\n...\n<SPECIAL_11>User\n...\n<SPECIAL_11>Assistant\n``); Nemotron Nano v2
    answers without reasoning after ``assistant_prefix="<think></think>"``. Override the markers for
    a checkpoint whose tokenizer uses others.
    """

    def __init__(
        self,
        system: str = "",
        turn_start: str = "<SPECIAL_10>",
        turn_sep: str = "<SPECIAL_11>",
        eos: str = "<SPECIAL_12>",
        assistant_prefix: str = "",
    ) -> None:
        self.system, self.turn_start, self.turn_sep, self.eos = system, turn_start, turn_sep, eos
        self.assistant_prefix = assistant_prefix

    def prompt(self, question: str) -> str:
        return (
            f"{self.turn_start}System\n{self.system}\n"
            f"{self.turn_sep}User\n{VIDEO_TOKEN}\n{_check_question(question)}\n"
            f"{self.turn_sep}Assistant\n{self.assistant_prefix}"
        )

    def answer(self, text: str) -> str:
        return f"{text.strip()}{self.eos}"


class Qwen2ChatTemplate:
    """ChatML (Qwen2/2.5): ``<|im_start|>user\\n<video>\\n...<|im_end|>\\n<|im_start|>assistant\\n``."""

    def __init__(self, system: str = "You are a helpful assistant.", eos: str = "<|im_end|>") -> None:
        self.system, self.eos = system, eos

    def prompt(self, question: str) -> str:
        head = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return f"{head}<|im_start|>user\n{VIDEO_TOKEN}\n{_check_question(question)}<|im_end|>\n<|im_start|>assistant\n"

    def answer(self, text: str) -> str:
        return f"{text.strip()}{self.eos}"
