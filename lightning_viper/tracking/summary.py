"""``viper summary``: the latest MLflow run of an experiment, its test metrics and how to view it."""

from __future__ import annotations

import logging

from mlflow.tracking import MlflowClient

from lightning_viper.tracking.mlflow import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

log = logging.getLogger(__name__)


class NoRunError(LookupError):
    """The tracking store has no such experiment, or the experiment has no run."""


def summary(experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str = DEFAULT_TRACKING_URI) -> str:
    """Show the latest run of an MLflow experiment: its name, test metrics and how to view it.

    Args:
        experiment: MLflow experiment name, e.g. demo (the experiment_name of a recipe's logger; by
            default the logger's own default).
        tracking_uri: the MLflow store, e.g. sqlite:///mlflow.db or an http(s):// tracking server.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise NoRunError(f"no MLflow experiment named {experiment!r} in {tracking_uri}; it has {names}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise NoRunError(f"experiment {experiment!r} has no runs in {tracking_uri}: run lightning fit first")
    run = runs[0]
    lines = [f"MLflow run {run.info.run_name!r} ({run.info.run_id}) in experiment {experiment!r}, {tracking_uri}"]
    for key in sorted(run.data.metrics):
        if key.startswith("test/"):
            lines.append(f"  {key:40s} {run.data.metrics[key]:.4f}")
    lines.append(f"view it: mlflow ui --backend-store-uri {tracking_uri}")
    return "\n".join(lines)
