"""``viper compare``: train and test every strategy of a comparison file (or only test them on one
checkpoint), then write the report."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from lightning_viper.cli.argv import as_cli_arg
from lightning_viper.compare.commands import lightning_command, write_patch
from lightning_viper.compare.plots import all_plots
from lightning_viper.compare.report import aggregate, render_html, render_markdown
from lightning_viper.compare.spec import CompareSpec, Strategy, Variant, load_spec
from lightning_viper.compare.store import TAG_ROLE, CompareStore, RunRecord

log = logging.getLogger(__name__)


class CompareError(RuntimeError):
    """Some runs of a comparison failed; the report still holds the ones that finished."""


MODEL = "_checkpoint"  # the variant name of the one fit an evaluation-only comparison may need
ROLE_MODEL = "checkpoint"


def compare(
    comparison: str,
    override: list[str] | None = None,
    ckpt_path: str | None = None,
    output: str | None = None,
    dry_run: bool = False,
    overrides: list[str] | None = None,
) -> Path:
    """Run every strategy x seed x frames of a comparison file and write its report.

    Each run is ``lightning fit`` then ``lightning test --ckpt_path last`` in a subprocess, one
    after another, all in one MLflow experiment with tags ``compare``, ``variant``, ``seed`` and
    ``frames``. An evaluation-only comparison (``train: false`` in the file, or ``--ckpt_path``)
    trains nothing: each run is one ``lightning test`` of the same checkpoint with the strategy
    applied at test time (without a ``checkpoint:`` the base recipe is fitted once first). A run
    whose MLflow run FINISHED with test metrics is not run again, so an interrupted comparison
    resumes where it stopped. The report (Markdown, HTML, PNG plots) is written to ``output`` and
    logged to a summary run that is the parent of the comparison's runs.

    Args:
        comparison: the comparison YAML (see :mod:`lightning_viper.compare.spec`). (Not named
            ``config``: jsonargparse reserves that name for its own ``--config`` option.)
        override: a dotted CLI arg for every run, ``key=value``; repeat it
            (``--override trainer.max_steps=5 --override data.init_args.num_test=16``), or put
            them after ``--`` (``viper compare SPEC -- --trainer.max_steps=5``).
        ckpt_path: test every strategy on this Lightning checkpoint, training nothing.
        output: report folder; default ``reports/<name>/``. Run folders go to ``<output>/runs/``.
        dry_run: only write each run's config patch and log the commands; touch no MLflow store.
        overrides: the older form of ``override``, a list: ``--overrides='["--trainer.max_steps=5"]'``.

    Returns:
        The report folder.

    Raises:
        CompareError: after writing the report, if any run failed (the message names the logs).
    """
    spec = load_spec(comparison)
    if ckpt_path is not None:
        spec = replace(spec, train=False, checkpoint=Path(ckpt_path).expanduser().resolve())
    out_dir = (Path(output) if output else Path("reports") / spec.name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = [as_cli_arg(o) for o in [*(overrides or []), *(override or [])]]
    variants = spec.variants()
    model = Variant(Strategy(MODEL, compression=None), spec.seeds[0], None)
    checkpoint = spec.checkpoint or out_dir / "runs" / model.key / "checkpoints" / "last.ckpt"
    mode = "training" if spec.train else f"evaluation only, checkpoint {checkpoint}"
    log.info(
        "comparison %r (%s): %d runs, experiment %r in %s",
        *(spec.name, mode, len(variants), spec.experiment, spec.tracking_uri),
    )
    if dry_run:
        lines = []
        if not spec.train and spec.checkpoint is None:
            patch = write_patch(spec, model, out_dir / "runs" / model.key, None, extra_tags={TAG_ROLE: ROLE_MODEL})
            lines.append(shlex.join(lightning_command("fit", spec, patch, extra)))
        for v in variants:
            patch = write_patch(spec, v, out_dir / "runs" / v.key, None, None if spec.train else checkpoint)
            stages = ("fit", "test") if spec.train else ("test",)
            lines += [shlex.join(lightning_command(s, spec, patch, extra)) for s in stages]
        (out_dir / "commands.sh").write_text("\n".join(lines) + "\n")
        log.info("dry run: commands written to %s", out_dir / "commands.sh")
        return out_dir

    store = CompareStore(spec.tracking_uri, spec.experiment, spec.name)
    parent = store.summary_run()
    failures: list[str] = []
    if not spec.train:
        failure = _prepare_checkpoint(spec, model, checkpoint, store, out_dir, parent, extra)
        if failure:
            store.log_report(parent, [], status="FAILED")
            raise CompareError(failure)
    for i, variant in enumerate(variants, 1):
        log.info("[%d/%d] %s", i, len(variants), variant.key)
        if spec.train:
            failure = _run_variant(spec, variant, store, out_dir, parent, extra)
        else:
            failure = _test_variant(spec, variant, store, out_dir, parent, extra, checkpoint)
        if failure:
            failures.append(failure)
            log.error("%s", failure)

    records = _current(store.records(), spec)
    files = write_report(spec, records, out_dir)
    store.log_report(parent, files, status="FAILED" if failures else "FINISHED")
    log.info("report: %s", out_dir / "report.md")
    if failures:
        raise CompareError(f"{len(failures)} of {len(variants)} runs failed:\n" + "\n".join(failures))
    return out_dir


def _run_variant(
    spec: CompareSpec, variant: Variant, store: CompareStore, out_dir: Path, parent: str, extra: list[str]
) -> str | None:
    """Fit and test one run unless MLflow says it is done; returns a failure message or None."""
    ident = (variant.strategy.name, variant.seed, variant.frames_tag)
    if store.complete_run(*ident) is not None:
        log.info("%s: finished run with test metrics found, skipping", variant.key)
        return None
    run_dir = out_dir / "runs" / variant.key
    ckpt_dir = run_dir / "checkpoints"
    previous = store.runs_of(*ident)
    fit_done = bool(previous) and previous[0].info.status == "FINISHED" and any(ckpt_dir.glob("last*.ckpt"))
    patch = write_patch(spec, variant, run_dir, parent)
    if fit_done:
        log.info("%s: fit already finished (run %s), testing only", variant.key, previous[0].info.run_id)
    else:
        for run in previous:
            store.mark_stale(run)
        if ckpt_dir.exists():  # this run's own checkpoints from an interrupted attempt
            shutil.rmtree(ckpt_dir)
        if (failed := _launch("fit", spec, patch, extra, run_dir)) is not None:
            return f"{variant.key}: {failed}"
    if (failed := _launch("test", spec, patch, extra, run_dir)) is not None:
        return f"{variant.key}: {failed}"
    if store.complete_run(*ident) is None:
        return f"{variant.key}: test ended but MLflow has no finished run with test/ metrics (see {run_dir})"
    return None


def _prepare_checkpoint(
    spec: CompareSpec,
    model: Variant,
    checkpoint: Path,
    store: CompareStore,
    out_dir: Path,
    parent: str,
    extra: list[str],
) -> str | None:
    """Make sure the evaluation-only comparison's checkpoint exists: the given file, or the base
    recipe fitted once (reused when its fit FINISHED); returns a failure message or None."""
    if spec.checkpoint is not None:
        if not checkpoint.is_file():
            return (
                f"checkpoint {checkpoint} does not exist: train it first (lightning fit --config {spec.base}), "
                "or leave `checkpoint:` out of the comparison file to have the base recipe fitted once"
            )
        return None
    fits = [r for r in store.runs_with_role(ROLE_MODEL) if r.info.status == "FINISHED"]
    if fits and checkpoint.is_file():
        log.info("checkpoint %s: fit already finished (run %s), reusing it", checkpoint, fits[0].info.run_id)
        return None
    run_dir = out_dir / "runs" / model.key
    if run_dir.joinpath("checkpoints").exists():  # an interrupted fit's checkpoints
        shutil.rmtree(run_dir / "checkpoints")
    log.info("fitting the base recipe once for the evaluation-only comparison -> %s", checkpoint)
    patch = write_patch(spec, model, run_dir, parent, extra_tags={TAG_ROLE: ROLE_MODEL})
    if (failed := _launch("fit", spec, patch, extra, run_dir)) is not None:
        return f"{model.key}: {failed}"
    if not checkpoint.is_file():
        return f"{model.key}: the fit ended without writing {checkpoint}"
    return None


def _test_variant(
    spec: CompareSpec,
    variant: Variant,
    store: CompareStore,
    out_dir: Path,
    parent: str,
    extra: list[str],
    checkpoint: Path,
) -> str | None:
    """Test one strategy on the shared checkpoint unless MLflow says it is done; a failure message or None."""
    ident = (variant.strategy.name, variant.seed, variant.frames_tag)
    if store.complete_run(*ident) is not None:
        log.info("%s: finished run with test metrics found, skipping", variant.key)
        return None
    for run in store.runs_of(*ident):  # an interrupted or failed test
        store.mark_stale(run)
    run_dir = out_dir / "runs" / variant.key
    patch = write_patch(spec, variant, run_dir, parent, checkpoint)
    if (failed := _launch("test", spec, patch, extra, run_dir)) is not None:
        return f"{variant.key}: {failed}"
    if store.complete_run(*ident) is None:
        return f"{variant.key}: test ended but MLflow has no finished run with test/ metrics (see {run_dir})"
    return None


def _launch(stage: str, spec: CompareSpec, patch: Path, extra: list[str], run_dir: Path) -> str | None:
    """Run one ``lightning`` subcommand, output to ``run_dir/<stage>.log``; a failure message or None."""
    cmd = lightning_command(stage, spec, patch, extra)
    log_path = run_dir / f"{stage}.log"
    log.info("  %s > %s", shlex.join(cmd), log_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        return f"`lightning {stage}` exited with {proc.returncode}; log {log_path}; last lines:\n{tail}"
    return None


def _current(records: list[RunRecord], spec: CompareSpec) -> list[RunRecord]:
    """Records of the runs the comparison file lists now (older strategies of the same name left out)."""
    wanted = {(v.strategy.name, v.seed, v.frames_tag) for v in spec.variants()}
    return [r for r in records if (r.variant, r.seed, r.frames) in wanted]


def write_report(spec: CompareSpec, records: list[RunRecord], out_dir: Path) -> list[Path]:
    """Write report.md, report.html and the plots into ``out_dir``; returns the files written."""
    rows = aggregate(records, [s.name for s in spec.strategies])
    plots = all_plots(rows, out_dir)
    notes = [
        f"MLflow experiment `{spec.experiment}` in `{spec.tracking_uri}`; base recipe `{spec.base.name}`; "
        f"{len(records)} finished runs."
    ]
    if not spec.train:
        notes.append(
            f"Training-free: every strategy was applied at test time to one checkpoint "
            f"(`{spec.checkpoint or 'the base recipe, fitted once'}`); compression stages start fresh "
            "(TransV at alpha = 0)."
        )
    title = f"Compression comparison: {spec.name}" + ("" if spec.train else " (training-free, one checkpoint)")
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(title, rows, plots, notes))
    page.write_text(render_html(title, rows, plots, notes))
    return [md, page, *plots]
