"""MLflow queries of a comparison: which runs are done, run records for the report, the summary run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lightning_viper.compare.commands import TAG_COMPARE, TAG_FRAMES, TAG_SEED, TAG_VARIANT
from lightning_viper.tracking.liveness import owner_tags

log = logging.getLogger(__name__)

TAG_ROLE = "compare.role"  # "summary" on the parent run that holds the report
TAG_STALE = "compare.stale"  # "true" on runs superseded by a rerun
TEST_PREFIX = "test/"


@dataclass
class RunRecord:
    """What the report needs from one finished run."""

    variant: str
    seed: int
    frames: str  # frame count, or "recipe" when frames were not swept
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    strategy: str = ""  # the module's own description of its compression stages


def is_complete(run: Run) -> bool:
    """A run counts as done when it FINISHED and logged at least one test metric."""
    return run.info.status == "FINISHED" and any(k.startswith(TEST_PREFIX) for k in run.data.metrics)


class CompareStore:
    """The runs of one comparison (``tags.compare = name``) in one MLflow experiment."""

    def __init__(self, tracking_uri: str, experiment: str, name: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri, self.experiment, self.name = tracking_uri, experiment, name
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)

    def _search(self, extra: str = "") -> list[Run]:
        query = f"tags.{TAG_COMPARE} = '{self.name}'" + (f" and {extra}" if extra else "")
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], query, order_by=["attributes.start_time DESC"], page_token=token
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def runs_of(self, variant: str, seed: int, frames: str) -> list[Run]:
        """Runs of one variant, newest first; summary and stale runs left out."""
        query = f"tags.{TAG_VARIANT} = '{variant}' and tags.{TAG_SEED} = '{seed}' and tags.{TAG_FRAMES} = '{frames}'"
        return [r for r in self._search(query) if not _flag(r, TAG_STALE) and TAG_ROLE not in r.data.tags]

    def complete_run(self, variant: str, seed: int, frames: str) -> Run | None:
        """The newest finished run with test metrics for this variant, if any."""
        return next((r for r in self.runs_of(variant, seed, frames) if is_complete(r)), None)

    def runs_with_role(self, role: str) -> list[Run]:
        """Runs tagged ``compare.role = role`` (e.g. the one fit of an evaluation-only comparison), newest first."""
        return self._search(f"tags.`{TAG_ROLE}` = '{role}'")

    def mark_stale(self, run: Run) -> None:
        """Tag an unfinished run as superseded, so reports and resumes ignore it."""
        self.client.set_tag(run.info.run_id, TAG_STALE, "true")
        log.info("marked MLflow run %s (%s) stale", run.info.run_id, run.info.status)

    def records(self) -> list[RunRecord]:
        """One record per (variant, seed, frames): its newest complete run."""
        seen: set[tuple[str, str, str]] = set()
        out = []
        for run in self._search():
            tags = run.data.tags
            if TAG_ROLE in tags or _flag(run, TAG_STALE) or not is_complete(run):
                continue
            ident = (tags.get(TAG_VARIANT, "?"), tags.get(TAG_SEED, "0"), tags.get(TAG_FRAMES, "recipe"))
            if ident in seen:
                continue
            seen.add(ident)
            out.append(
                RunRecord(
                    variant=ident[0],
                    seed=int(ident[1]),
                    frames=ident[2],
                    run_id=run.info.run_id,
                    metrics=dict(run.data.metrics),
                    params=dict(run.data.params),
                    strategy=tags.get("strategy", ""),
                )
            )
        return out

    def summary_run(self) -> str:
        """The id of this comparison's summary (parent) run, created on first use and reused after."""
        owner = owner_tags()  # this process owns it now: a kill -9 is found by the next process
        existing = self._search(f"tags.`{TAG_ROLE}` = 'summary'")
        if existing:
            run_id = existing[0].info.run_id
            for key, value in owner.items():
                self.client.set_tag(run_id, key, value)
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.name}-summary",
            tags={TAG_COMPARE: self.name, TAG_ROLE: "summary", **owner},
        )
        return run.info.run_id

    def log_report(self, run_id: str, files: list[Path], status: str = "FINISHED") -> None:
        """Attach report files to the summary run and end it with ``status`` (FINISHED or FAILED)."""
        for f in files:
            self.client.log_artifact(run_id, str(f), artifact_path="report")
        self.client.set_terminated(run_id, status)


def _flag(run: Run, tag: str) -> bool:
    return run.data.tags.get(tag, "").lower() == "true"
