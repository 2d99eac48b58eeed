"""Plain overrides for ``viper compare``: ``--override key=value`` (repeatable) and ``-- ARGS...``.

jsonargparse reads a list option only as one JSON list (``--overrides='["--a=1"]'``) or with
``--override+=``; :func:`compare_args` rewrites the plain forms into the latter before parsing.
"""

from __future__ import annotations


def compare_args(args: list[str]) -> list[str]:
    """``viper compare SPEC --override a=1 --override b=2 -- --c=3`` -> ``... --override+=a=1
    --override+=b=2 --override+=--c=3``; other verbs' arguments are returned unchanged."""
    if not args or args[0] != "compare":
        return args
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            out += [f"--override+={tail}" for tail in rest]
        elif arg == "--override":
            value = next(rest, None)
            if value is None:
                raise SystemExit("viper compare: --override needs a value, e.g. --override trainer.max_steps=5")
            out.append(f"--override+={value}")
        elif arg.startswith("--override="):
            out.append("--override+=" + arg.removeprefix("--override="))
        else:
            out.append(arg)
    return out
