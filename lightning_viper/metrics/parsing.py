"""Parse free-form generated answers into the structured values the task metrics score.

Every parser returns ``None`` when it cannot read an answer; the metrics count those samples as
wrong (and report how many there were) instead of guessing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_LETTERS = string.ascii_uppercase
_NUMBER = r"\d+(?:\.\d+)?"
# a timestamp: seconds ("12.5") or clock time ("1:05", "01:02:03.5")
_TIME = rf"(?:\d+:)?(?:\d+:)?{_NUMBER}"
_UNIT = r"\s*(?:s|sec|secs|second|seconds)?\.?"

_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "no": 0, "none": 0})

# patterns tried in order; each captures (start, end)
_SPAN_PATTERNS = [
    re.compile(rf"\bfrom\s+(?:second\s+)?({_TIME}){_UNIT}\s*(?:to|until|till|-|–)\s*({_TIME})", re.I),
    re.compile(rf"\bbetween\s+({_TIME}){_UNIT}\s*(?:and|to|-|–)\s*({_TIME})", re.I),
    re.compile(rf"[\[(]\s*({_TIME}){_UNIT}\s*[,;]\s*({_TIME}){_UNIT}\s*[\])]"),
    re.compile(rf"({_TIME}){_UNIT}\s*(?:-|–|to|until|,)\s*({_TIME})", re.I),
]

_ANSWER_CUE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:|would be|should be)?\s*:?\s*\(?([A-Za-z])\b\)?", re.I)
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Za-z])(?:\)|\.|:|\s*$)")
_BRACKETED_LETTER = re.compile(r"\(([A-Z])\)")
_LONE_CAPITAL = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (for text matching)."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    words = [w for w in text.split() if w not in {"a", "an", "the"}]
    return " ".join(words)


def parse_time(token: str) -> float:
    """``"12.5"`` -> 12.5 s; ``"1:05"`` -> 65 s; ``"1:02:03"`` -> 3723 s."""
    seconds = 0.0
    for part in token.split(":"):
        seconds = seconds * 60.0 + float(part)
    return seconds


def parse_span(text: str) -> tuple[float, float] | None:
    """Read a time span in seconds from text.

    Understands "from 12.5 to 20 seconds", "12.5 - 20", "between 3 and 7.5 s", "[3.0, 7.5]",
    clock times ("0:03 to 0:07"). Returns ``(start_s, end_s)`` with start <= end, or ``None``.
    """
    for pattern in _SPAN_PATTERNS:
        match = pattern.search(text)
        if match:
            a, b = parse_time(match.group(1)), parse_time(match.group(2))
            return (min(a, b), max(a, b))
    return None


def parse_count(text: str) -> int | None:
    """The first integer (digits, rounded down if decimal) or number word in ``text``, else ``None``."""
    words = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
    match = re.search(rf"(\d+(?:\.\d+)?)|\b({words})\b", text, re.I)
    if match is None:
        return None
    if match.group(1) is not None:
        return int(float(match.group(1)))
    return _NUMBER_WORDS[match.group(2).lower()]


def parse_choice(text: str, options: Sequence[str] | None = None) -> int | None:
    """Index of the chosen option, or ``None`` if the text names no option unambiguously.

    Accepted forms: "B", "(B)", "B. red", "b)", "The answer is B", "Answer: (b)", and, when
    ``options`` are given, the option text itself ("red"). Letters beyond the number of options
    (or beyond E when no options are given) are not accepted.
    """
    n = len(options) if options else 5
    valid = set(_LETTERS[:n])

    def index(letter: str) -> int | None:
        letter = letter.upper()
        return _LETTERS.index(letter) if letter in valid else None

    stripped = text.strip()
    # 1) the answer starts with the letter: "B", "(B)", "b)", "B. red", "C: blue"
    match = _LEADING_LETTER.match(stripped)
    if match and (choice := index(match.group(1))) is not None:
        return choice
    # 2) a cue word then a letter: "The answer is B", "Answer: (b)", "option C"
    for match in _ANSWER_CUE.finditer(stripped):
        letter = match.group(1)
        after = stripped[match.end() :].lstrip()
        # a lower-case letter followed by more words is an article ("the answer is a red car")
        if letter.islower() and after[:1].isalpha():
            continue
        if (choice := index(letter)) is not None:
            return choice
    # 3) the option text itself
    if options:
        norm = normalize_text(stripped)
        norm_options = [normalize_text(o) for o in options]
        exact = [i for i, o in enumerate(norm_options) if o and o == norm]
        if len(exact) == 1:
            return exact[0]
        contained = [i for i, o in enumerate(norm_options) if o and re.search(rf"\b{re.escape(o)}\b", norm)]
        # the longest contained option wins only if it contains every other contained one ("dark red" > "red")
        if contained:
            best = max(contained, key=lambda i: len(norm_options[i]))
            if all(norm_options[i] in norm_options[best] for i in contained):
                return best
    # 4) exactly one distinct capital letter standing alone, e.g. "I think (C) is right"
    letters = {m.group(1) for m in _BRACKETED_LETTER.finditer(stripped)} & valid
    if not letters:
        letters = {m.group(1) for m in _LONE_CAPITAL.finditer(stripped)} & valid - {"I"}
    if len(letters) == 1:
        return index(letters.pop())
    return None


def target_choice(answer: str | None, options: Sequence[str] | None, answer_index: int | None) -> int:
    """The correct option index from an mcq sample's meta (``answer_index`` first, else ``answer``)."""
    if answer_index is not None:
        return int(answer_index)
    if answer is None:
        raise ValueError("mcq sample has neither 'answer_index' nor 'answer' in its meta; add one of them")
    parsed = parse_choice(answer, options)
    if parsed is None:
        raise ValueError(f"cannot read the correct option from mcq answer {answer!r}; give 'answer_index' in meta")
    return parsed


def caption_references(meta: dict) -> list[str]:
    """Reference captions of a sample: ``meta['references']`` (list) if present, else ``meta['answer']``."""
    refs = meta.get("references")
    if refs is None:
        refs = meta.get("answer")
    if refs is None:
        raise ValueError("caption sample has neither 'references' nor 'answer' in its meta")
    if isinstance(refs, str):
        refs = [refs]
    refs = [str(r) for r in refs]
    if not refs:
        raise ValueError("caption sample has an empty reference list")
    return refs
