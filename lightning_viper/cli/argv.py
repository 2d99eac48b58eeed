"""Command-line spellings that jsonargparse cannot take as written, rewritten before parsing."""

from __future__ import annotations

RECIPE_VERBS = ("ask", "analyze")  # verbs whose recipe is given as --config, like `lightning fit`


def config_as_recipe(args: list[str]) -> list[str]:
    """``viper ask|analyze ... --config RECIPE`` -> ``--recipe RECIPE``: jsonargparse keeps
    ``--config`` for its own config files, and users type ``--config`` for a recipe everywhere."""
    if not args or args[0] not in RECIPE_VERBS:
        return args
    out = []
    for arg in args:
        if arg == "--config":
            out.append("--recipe")
        elif arg.startswith("--config="):
            out.append("--recipe=" + arg.removeprefix("--config="))
        else:
            out.append(arg)
    return out
