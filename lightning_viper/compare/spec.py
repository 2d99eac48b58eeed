"""The comparison file (recipes/compare/*.yaml) as typed data, and its expansion into runs.

name: demo                               # names the report folder and the MLflow tags
base: recipes/demo.yaml                  # relative to the repo root or to this file
experiment: compare-demo                 # MLflow experiment (default: compare-<name>)
tracking_uri: sqlite:///mlflow.db        # default: the base recipe's logger, else sqlite:///mlflow.db
seeds: [0, 1]
frames: {key: data.init_args.num_frames, values: [8, 16]}   # optional sweep
overrides: ["--trainer.max_steps=100"]   # optional, applied to every run (the leading -- may be left out)
train: true                              # false: evaluation only, every strategy tested on one checkpoint
checkpoint: runs/x/last.ckpt             # with train: false; omitted: the base recipe is fitted once first
strategies:
  - name: transv_uniform
    compression:                         # list of class_path/init_args stages ([] = none)
      - {class_path: lightning_viper.compression.TransV, init_args: {layer: 1, keep: 0.5}}
    projector: {class_path: ..., init_args: {...}}   # optional projector override

With ``train: false`` (or ``viper compare SPEC --ckpt_path CKPT``) no strategy is trained: each one
is a ``lightning test`` of the same weights (encoder, projector and backbone from the checkpoint;
compression stages fresh, so TransV starts at alpha = 0) with the strategy's projector and stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_viper.cli.argv import as_cli_arg

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Strategy:
    """One compression strategy: LLM stages (class_path/init_args dicts; None keeps the recipe's) and
    an optional projector."""

    name: str
    compression: list[dict[str, Any]] | None = field(default_factory=list)
    projector: dict[str, Any] | None = None


@dataclass(frozen=True)
class Variant:
    """One run of the comparison: a strategy at one seed and (optionally) one frame count."""

    strategy: Strategy
    seed: int
    frames: int | None

    @property
    def key(self) -> str:
        """File-system and run-name friendly id, e.g. ``transv_uniform-s0-f16``."""
        return f"{self.strategy.name}-s{self.seed}" + ("" if self.frames is None else f"-f{self.frames}")

    @property
    def frames_tag(self) -> str:
        return "recipe" if self.frames is None else str(self.frames)


@dataclass(frozen=True)
class CompareSpec:
    """A parsed comparison file; see the module docstring for the YAML layout."""

    name: str
    base: Path
    experiment: str
    tracking_uri: str
    strategies: list[Strategy]
    seeds: list[int]
    frames_key: str | None = None
    frames: list[int] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    base_config: dict[str, Any] = field(default_factory=dict)
    train: bool = True
    checkpoint: Path | None = None

    def variants(self) -> list[Variant]:
        """All runs, strategy-major (each strategy's seeds and frame counts together)."""
        frames: list[int | None] = list(self.frames) if self.frames else [None]
        return [Variant(s, seed, f) for s in self.strategies for f in frames for seed in self.seeds]


def _require(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise ValueError(f"{path}: {message}")


def _class_item(item: Any, path: Path, where: str) -> dict[str, Any]:
    _require(isinstance(item, dict) and "class_path" in item, path, f"{where} must be a mapping with a class_path")
    _require(set(item) <= {"class_path", "init_args"}, path, f"{where} may only hold class_path and init_args")
    return {"class_path": str(item["class_path"]), "init_args": dict(item.get("init_args") or {})}


def repo_root(start: Path) -> Path | None:
    """The nearest ancestor of ``start`` holding a pyproject.toml, if any."""
    for parent in [start, *start.parents]:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def resolve_base(base: str, spec_path: Path) -> Path:
    """Find the base recipe: absolute, relative to the repo root, to the comparison file, or to cwd."""
    candidates = [Path(base)] if Path(base).is_absolute() else []
    root = repo_root(spec_path.resolve().parent)
    if root is not None:
        candidates.append(root / base)
    candidates += [spec_path.resolve().parent / base, Path.cwd() / base]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{spec_path}: base recipe {base!r} not found; tried {[str(c) for c in candidates]}")


def absolute_tracking_uri(uri: str, cwd: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` absolute, so every subprocess and query uses one store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(((cwd or Path.cwd()) / uri[len(prefix) :]).resolve())
    return uri


def _logger_tracking_uri(base_config: dict[str, Any]) -> str | None:
    logger = (base_config.get("trainer") or {}).get("logger")
    if isinstance(logger, dict):
        uri = (logger.get("init_args") or {}).get("tracking_uri")
        return str(uri) if uri else None
    return None


def load_spec(path: str | Path) -> CompareSpec:
    """Read and check a comparison file; errors name the file and the field to fix."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"comparison file {p} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    _require(isinstance(raw, dict), p, "expected a mapping at the top level")
    known = {"name", "base", "experiment", "tracking_uri", "seeds", "frames", "overrides", "strategies", "train"}
    known |= {"checkpoint"}
    _require(not set(raw) - known, p, f"unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    _require("base" in raw, p, "missing 'base' (the recipe every strategy starts from)")
    name = str(raw.get("name") or p.stem)
    _require(bool(_NAME.match(name)), p, f"name {name!r} may only use letters, digits, '_', '-' and '.'")
    base = resolve_base(str(raw["base"]), p)
    base_config = yaml.safe_load(base.read_text()) or {}

    strategies = []
    for i, item in enumerate(raw.get("strategies") or []):
        where = f"strategies[{i}]"
        _require(isinstance(item, dict) and "name" in item, p, f"{where} needs a name")
        _require(set(item) <= {"name", "compression", "projector"}, p, f"{where}: only name/compression/projector")
        sname = str(item["name"])
        _require(bool(_NAME.match(sname)), p, f"{where}: name {sname!r} may only use letters, digits, '_', '-', '.'")
        stages = item.get("compression") or []
        _require(isinstance(stages, list), p, f"{where}.compression must be a list of stages ([] for none)")
        compression = [_class_item(s, p, f"{where}.compression[{j}]") for j, s in enumerate(stages)]
        projector = _class_item(item["projector"], p, f"{where}.projector") if item.get("projector") else None
        strategies.append(Strategy(sname, compression, projector))
    _require(bool(strategies), p, "no strategies listed")
    names = [s.name for s in strategies]
    _require(len(set(names)) == len(names), p, f"strategy names must be unique, got {names}")

    seeds = [int(s) for s in raw.get("seeds") or [0]]
    frames_cfg = raw.get("frames")
    frames_key, frames = None, []
    if frames_cfg:
        _require(
            isinstance(frames_cfg, dict) and {"key", "values"} <= set(frames_cfg), p, "frames needs key and values"
        )
        frames_key, frames = str(frames_cfg["key"]), [int(v) for v in frames_cfg["values"]]
        _require(bool(frames), p, "frames.values is empty")
    try:
        overrides = [as_cli_arg(str(o)) for o in raw.get("overrides") or []]
    except ValueError as error:
        raise ValueError(f"{p}: overrides: {error}") from None
    train = raw.get("train", True)
    _require(isinstance(train, bool), p, f"train must be true or false, got {train!r}")
    checkpoint = raw.get("checkpoint")
    _require(checkpoint is None or not train, p, "checkpoint is only read with train: false (evaluation only)")
    uri = raw.get("tracking_uri") or _logger_tracking_uri(base_config) or DEFAULT_TRACKING_URI
    return CompareSpec(
        name=name,
        base=base,
        experiment=str(raw.get("experiment") or f"compare-{name}"),
        tracking_uri=absolute_tracking_uri(str(uri)),
        strategies=strategies,
        seeds=seeds,
        frames_key=frames_key,
        frames=frames,
        overrides=overrides,
        base_config=base_config,
        train=train,
        checkpoint=Path(str(checkpoint)).expanduser().resolve() if checkpoint else None,
    )
