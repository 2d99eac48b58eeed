"""MLflow tracking with a local sqlite store by default.

MLflow 3 refuses its old file store, and Lightning's MLFlowLogger defaults to ``file:./mlruns``,
so this logger defaults to ``sqlite:///mlflow.db`` (view it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``). A run can be continued by ``run_id``:
the CLI records each fit's run id next to its checkpoints, so ``lightning test --ckpt_path last``
logs test metrics into the same run as the fit. A fit resumed into its run is marked and never
logs a step twice (:meth:`MLflowLogger.resume_fit`); statuses are described in docs/reliability.md.
Each run records the process that owns it, and each logger first marks KILLED the RUNNING runs of
this host whose process died without closing them (``tracking.liveness``: ``kill -9``, OOM).
"""

from __future__ import annotations

import json
import logging
import re
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_viper.tracking.flatten import flatten_config
from lightning_viper.tracking.liveness import TAG_DETECTED, owner_tags, reap_dead_runs
from lightning_viper.tracking.store import (
    STORE_ERRORS,
    TrackingStoreError,
    bound_http_requests,
    check_store,
    describe_failure,
    quiet_store_tracebacks,
    store_write,
)

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lightning-viper"
RUN_FILE = "mlflow_run.json"


class MLflowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with a sqlite default, tags as a plain dict and run resumption.

    The store is checked at construction (``tracking.store.check_store``: a sqlite store must be
    writable with free space, a server must answer within ``request_timeout`` seconds), MLflow's
    HTTP client makes at most ``request_retries`` retries of ``request_timeout`` seconds each, and a
    failed write raises ``TrackingStoreError`` saying what happened and what to do.

    On rank 0 it then marks KILLED the store's RUNNING runs whose process on this host is gone
    (:func:`~lightning_viper.tracking.liveness.reap_dead_runs`); a run it starts carries this
    process as its owner (``viper.owner.*`` tags), and so does a run this session continues as its
    own (:meth:`claim_run`).
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        log_model: bool = False,
        artifact_location: str | None = None,
        request_timeout: float = 10.0,
        request_retries: int = 2,
    ) -> None:
        if tracking_uri.startswith("file:") or "://" not in tracking_uri:
            raise ValueError(
                f"tracking_uri {tracking_uri!r} is MLflow's file store, which MLflow 3 refuses: "
                "use a database URI such as sqlite:///mlflow.db or an http(s):// tracking server"
            )
        bound_http_requests(request_timeout, request_retries)
        check_store(tracking_uri, request_timeout)  # fail in seconds, before MLflow opens the store
        quiet_store_tracebacks()
        self.tracking_uri = tracking_uri  # the store this logger writes to
        self.store_failure: str | None = None  # set by a failed write (store_write), recorded by finalize
        self.explicit_run_name = run_name
        self.continues_run = run_id is not None  # a test, or a fit resumed from a checkpoint
        self._final_status: str | None = None  # set by mark_final_status, used by finalize
        self.keeps_status = False  # set by keep_run_status: finalize leaves the run's status alone
        self._checkpoint_step: int | None = None  # set by log_at_step: a test's metrics go there
        self._logged_until: dict[str, int] = {}  # metric key -> last step the run holds (resume)
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri,
            tags={**owner_tags(), **(tags or {})} if run_id is None else dict(tags or {}),
            log_model=log_model,
            artifact_location=artifact_location,
            run_id=run_id,
        )
        if getattr(rank_zero_only, "rank", 0) == 0:  # set by Lightning at import, from the launcher's env
            reap_dead_runs(self._mlflow_client)  # before this run is opened: a resumed one may be among them

    @property
    def experiment(self) -> Any:
        try:
            return super().experiment
        except STORE_ERRORS as error:
            self.store_failure = describe_failure(self.tracking_uri, "open the run", error)
            raise TrackingStoreError(self.store_failure) from error

    @rank_zero_only
    @store_write("log params")
    def log_hyperparams(self, params: Any) -> None:
        """Log params; when continuing a run (test or resume), keep the values the run already
        holds (MLflow forbids changing a param) and log a warning for each one that differs."""
        flat = flatten_config(vars(params) if isinstance(params, Namespace) else dict(params or {}))
        existing = self.experiment.get_run(self.run_id).data.params
        changed = {k: (existing[k], str(v)) for k, v in flat.items() if k in existing and existing[k] != str(v)[:6000]}
        for key, (old, new) in changed.items():
            log.warning("param %s is %s in this run; keeping it (this session has %s)", key, old, new)
        fresh = {k: v for k, v in flat.items() if k not in existing}
        if fresh:
            super().log_hyperparams(fresh)

    @rank_zero_only
    @store_write("set tags")
    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.experiment.set_tag(self.run_id, key, str(value))

    @rank_zero_only
    @store_write("log an artifact")
    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.experiment.log_artifact(self.run_id, str(path), artifact_path)

    def claim_run(self) -> None:
        """This session will end the run (a fit continuing it): record this process as its owner."""
        self.set_tags(owner_tags())

    def mark_final_status(self, status: str) -> None:
        """End the run with ``status`` (e.g. ``KILLED``) whatever Lightning's ``finalize`` asks for."""
        self._final_status = status

    def keep_run_status(self) -> None:
        """This session (test, validate, predict) logs into a fit's run: leave the status the fit
        gave the run (FINISHED, KILLED, FAILED) as it is, instead of ending it again."""
        self.keeps_status = True

    def log_at_step(self, step: int) -> None:
        """Log this (test, validate, predict) session's metrics at ``step``, the global step of the
        checkpoint it evaluates, instead of Lightning's 0."""
        self._checkpoint_step = step

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self.keeps_status:
            self._end_run(self._final_status or status)

    def _end_run(self, status: str) -> None:
        """Lightning's finalize; after a failed write, its message goes into ``failure_reason``.
        A status that cannot be written is an error after a clean run and a log line after a
        failed one (the error that stopped the run is the one to raise)."""
        try:
            if self.store_failure and status in ("failed", "FAILED"):
                self.experiment.set_tag(self.run_id, "failure_reason", self.store_failure[:5000])
            super().finalize(status)
        except STORE_ERRORS as error:
            name = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}.get(status, status)
            message = describe_failure(self.tracking_uri, f"end the run as {name}", error)
            if status in ("success", "finished", "FINISHED"):
                self.store_failure = message
                raise TrackingStoreError(message) from error
            log.error("MLflow run %s stays RUNNING: the store cannot record its end. %s", self._run_id, message)

    @rank_zero_only
    def resume_fit(self, step: int) -> None:
        """This session continues the run's fit from a checkpoint at global step ``step``.

        Sets the run RUNNING again and tags it (``resumed_from_step``, ``resumes``; after an
        interruption, i.e. any status but FINISHED: ``interrupted``, ``interruptions``,
        ``last_interruption``). MLflow's metric history is append-only, so steps the interrupted
        session logged after its last checkpoint are kept and the replayed steps are not logged
        again: each key's history stays one value per step, and the ``replayed_steps`` tag names
        the steps whose values come from the interrupted session.
        """
        client = self.experiment
        run = client.get_run(self.run_id)
        previous, tags = run.info.status, run.data.tags
        self._logged_until = {
            key: max((m.step for m in client.get_metric_history(self.run_id, key)), default=-1)
            for key in run.data.metrics
        }
        new: dict[str, Any] = {"resumed_from_step": step, "resumes": int(tags.get("resumes", 0)) + 1, **owner_tags()}
        if previous != "FINISHED":
            reason = tags.get("killed_by") or tags.get("failure_reason")
            if previous == "RUNNING":
                reason = "the process ended without closing the run (kill -9, out of memory, lost machine)"
            new["interrupted"] = "true"
            new["interruptions"] = int(tags.get("interruptions", 0)) + 1
            new["last_interruption"] = f"{previous}: {reason}"[:5000] if reason else previous
        high = max(self._logged_until.values(), default=-1)
        if high >= step:
            new["replayed_steps"] = f"{step}-{high}"
        self.set_tags(new)
        for key in ("killed_by", "killed_at_step", TAG_DETECTED, "failure_reason", "nan_guard_step"):
            if key in tags:
                client.delete_tag(self.run_id, key)
        client.update_run(self.run_id, status="RUNNING")
        replay = f"; steps {step}-{high} were logged before the interruption and are not logged again"
        log.info("MLflow run %s (%s) resumed at step %d%s", self.run_id, previous, step, replay if high >= step else "")

    @rank_zero_only
    @store_write("log metrics", step_arg=1)
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.keeps_status:  # a test in a fit's run: Lightning's `epoch` (0 here) belongs to the fit
            metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            step = self._checkpoint_step if self._checkpoint_step is not None else step
            if not metrics:
                return
        if self._logged_until:  # a resumed fit: skip the steps the run already holds
            at = step or 0
            metrics = {k: v for k, v in metrics.items() if at > self._logged_until.get(_mlflow_key(k), -1)}
            if at > max(self._logged_until.values()):
                self._logged_until = {}
            if not metrics:
                return
        super().log_metrics(metrics, step)


def _mlflow_key(key: str) -> str:
    """A metric key as Lightning's MLFlowLogger stores it (characters MLflow refuses removed)."""
    return re.sub("[^a-zA-Z0-9_/. -]+", "", key)


def remember_run(directory: str | Path, logger: MLflowLogger) -> None:
    """Write the run's id and store next to the checkpoints, for later test/resume."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    payload = {"run_id": logger.run_id, "tracking_uri": logger.tracking_uri, "experiment_id": logger.experiment_id}
    (d / RUN_FILE).write_text(json.dumps(payload, indent=2))


def recall_run(directory: str | Path) -> dict[str, str] | None:
    """The run recorded by :func:`remember_run` in ``directory``, if any."""
    f = Path(directory) / RUN_FILE
    if not f.is_file():
        return None
    data: dict[str, str] = json.loads(f.read_text())
    return data
