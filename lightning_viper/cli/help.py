"""Help a user can read: the verbs' docstrings without reStructuredText markup.

The verbs' docstrings are written for Sphinx-style readers (``x``, :func:`~pkg.mod.name`); the
``viper`` parsers print them as plain text: ``x`` -> x, :role:`~a.b.c` -> c, :role:`a.b` -> a.b.
"""

from __future__ import annotations

import re
from typing import Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter

_LITERAL = re.compile(r"``(.+?)``", re.S)
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``text`` without inline reStructuredText markup (literals and cross-reference roles)."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _LITERAL.sub(r"\1", text)


class PlainHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help layout, with descriptions and argument help passed through :func:`plain`."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: Any) -> str:
        return plain(super()._expand_help(action))


class PlainParser(ArgumentParser):
    """An ArgumentParser whose help is plain text; jsonargparse builds every subcommand's parser
    with the same class, so the whole ``viper`` tree prints plain help."""

    def __init__(self, *args: Any, formatter_class: Any = PlainHelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
