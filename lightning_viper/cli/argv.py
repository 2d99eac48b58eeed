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


OVERRIDE_LISTS = {"compare": "override", "analyze": "overrides", "export": "overrides"}  # verb -> list option


def as_cli_arg(arg: str) -> str:
    """``trainer.max_steps=5`` or ``--trainer.max_steps=5`` -> ``--trainer.max_steps=5``."""
    arg = arg.strip()
    if not arg.lstrip("-") or "=" not in arg:
        raise ValueError(f"override {arg!r} must look like key=value, e.g. trainer.max_steps=5")
    return arg if arg.startswith("--") else f"--{arg}"


def plain_overrides(args: list[str]) -> list[str]:
    """``viper compare|analyze|export ... --override a=1 --override b=2 -- --c=3`` -> the verb's
    list option, item by item (``--override+=--a=1 ...``): jsonargparse reads a list option only as
    one JSON list (``--overrides='["--a=1"]'``, still accepted) or with ``+=``."""
    if not args or args[0] not in OVERRIDE_LISTS:
        return args
    option = f"--{OVERRIDE_LISTS[args[0]]}+="
    out: list[str] = []
    rest = iter(args)
    try:
        for arg in rest:
            if arg == "--":
                out += [option + as_cli_arg(tail) for tail in rest]
            elif arg == "--override":
                value = next(rest, None)
                if value is None:
                    raise ValueError("--override needs a value, e.g. --override trainer.max_steps=5")
                out.append(option + as_cli_arg(value))
            elif arg.startswith("--override="):
                out.append(option + as_cli_arg(arg.removeprefix("--override=")))
            else:
                out.append(arg)
    except ValueError as error:
        raise SystemExit(f"viper {args[0]}: {error}") from None
    return out
