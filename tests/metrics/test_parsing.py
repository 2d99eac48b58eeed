"""Answer parsers: each accepted surface form maps to the value written next to it."""

import pytest

from lightning_viper.metrics.parsing import parse_choice, parse_count, parse_span, target_choice

OPTIONS = ["red", "green", "blue", "dark red"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", 1),
        ("(B)", 1),
        ("B. green", 1),
        ("The answer is B", 1),
        ("b)", 1),
        ("Answer: (c)", 2),
        ("the answer is b.", 1),
        ("red", 0),
        ("Blue.", 2),
        ("dark red", 3),  # the longer option that contains the shorter one
        ("I think (C) is right", 2),
        ("E", None),  # beyond the four options
        ("banana", None),
        ("", None),
    ],
)
def test_parse_choice(text: str, expected: int | None) -> None:
    assert parse_choice(text, OPTIONS) == expected


def test_parse_choice_without_options_accepts_a_to_e() -> None:
    assert parse_choice("D") == 3
    assert parse_choice("F") is None


def test_target_choice_prefers_index_then_answer_text() -> None:
    assert target_choice("C", OPTIONS, 1) == 1
    assert target_choice("C", OPTIONS, None) == 2
    assert target_choice("green", OPTIONS, None) == 1
    with pytest.raises(ValueError, match="answer_index"):
        target_choice("nothing like it", OPTIONS, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from 12.5 to 20 seconds", (12.5, 20.0)),
        ("12.5 - 20", (12.5, 20.0)),
        ("between 3 and 7.5 s", (3.0, 7.5)),
        ("[3.0, 7.5]", (3.0, 7.5)),
        ("The person sits from 0:03 to 1:07.", (3.0, 67.0)),
        ("from 9 to 4 seconds", (4.0, 9.0)),  # reversed ends are ordered
        ("it happens early", None),
    ],
)
def test_parse_span(text: str, expected: tuple[float, float] | None) -> None:
    assert parse_span(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", 3), ("There are three dogs", 3), ("2.0 cats", 2), ("I see 12 birds, not 13", 12), ("many", None)],
)
def test_parse_count(text: str, expected: int | None) -> None:
    assert parse_count(text) == expected
