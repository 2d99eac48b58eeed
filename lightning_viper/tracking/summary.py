"""Print the latest MLflow run of an experiment: its name, test metrics and how to view it.

python -m lightning_viper.tracking.summary --experiment demo [--tracking-uri sqlite:///mlflow.db]
"""

from __future__ import annotations

import argparse
import logging

from mlflow.tracking import MlflowClient

from lightning_viper.tracking.mlflow import DEFAULT_TRACKING_URI

log = logging.getLogger(__name__)


def latest_run_summary(experiment: str, tracking_uri: str = DEFAULT_TRACKING_URI) -> str:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r} in {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"experiment {experiment!r} has no runs in {tracking_uri}")
    run = runs[0]
    lines = [f"MLflow run {run.info.run_name!r} ({run.info.run_id}) in experiment {experiment!r}, {tracking_uri}"]
    for key in sorted(run.data.metrics):
        if key.startswith("test/"):
            lines.append(f"  {key:40s} {run.data.metrics[key]:.4f}")
    lines.append(f"view it: mlflow ui --backend-store-uri {tracking_uri}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    args = parser.parse_args()
    print(latest_run_summary(args.experiment, args.tracking_uri))


if __name__ == "__main__":
    main()
