"""``viper summary``: the latest MLflow run of an experiment, its status, test metrics and how to view it."""

from __future__ import annotations

import logging

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lightning_viper.tracking.liveness import describe_running, reap_dead_runs
from lightning_viper.tracking.mlflow import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI
from lightning_viper.tracking.store import (
    STORE_ERRORS,
    TrackingStoreError,
    check_store,
    quiet_store_tracebacks,
    sqlite_path,
)

log = logging.getLogger(__name__)


class NoRunError(LookupError):
    """The tracking store, the experiment or its runs do not exist."""


def summary(experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str = DEFAULT_TRACKING_URI) -> str:
    """Show the latest run of an MLflow experiment: its name, status, test metrics and how to view it.

    RUNNING runs of this host whose process is gone (kill -9, out of memory) are marked KILLED
    first; a RUNNING run of another host is shown as not verified.

    Args:
        experiment: MLflow experiment name, e.g. demo (the experiment_name of a recipe's logger; by
            default the logger's own default).
        tracking_uri: the MLflow store, e.g. sqlite:///mlflow.db or an http(s):// tracking server.
    """
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise NoRunError(
            f"no MLflow store at {path.absolute()} ({tracking_uri}): run lightning fit first, or pass the "
            "store with --tracking_uri sqlite:///PATH/mlflow.db"
        )
    if tracking_uri.startswith(("http://", "https://")):
        check_store(tracking_uri, timeout=10.0)
    quiet_store_tracebacks()
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise NoRunError(f"no MLflow experiment named {experiment!r} in {tracking_uri}; it has {names}")
        reap_dead_runs(client)
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    except STORE_ERRORS as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TrackingStoreError(f"MLflow store {tracking_uri} could not be read: {first}") from error
    if not runs:
        raise NoRunError(f"experiment {experiment!r} has no runs in {tracking_uri}: run lightning fit first")
    run = runs[0]
    lines = [f"MLflow run {run.info.run_name!r} ({run.info.run_id}) in experiment {experiment!r}, {tracking_uri}"]
    lines.append(f"  status: {status_line(run)}")
    for key in sorted(run.data.metrics):
        if key.startswith("test/"):
            lines.append(f"  {key:40s} {run.data.metrics[key]:.4f}")
    lines.append(f"view it: mlflow ui --backend-store-uri {tracking_uri}")
    return "\n".join(lines)


def status_line(run: Run) -> str:
    """The run's status with its reason: why it was KILLED or FAILED, whose process a RUNNING run is."""
    status, tags = run.info.status, run.data.tags
    if status == "RUNNING":
        return describe_running(run)
    reason = tags.get("killed_by") if status == "KILLED" else tags.get("failure_reason") if status == "FAILED" else None
    return f"{status} ({reason})" if reason else status
