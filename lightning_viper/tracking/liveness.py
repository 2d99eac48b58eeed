"""Runs whose process died without a word (``kill -9``, the out-of-memory killer) end KILLED on the next look.

A process killed by SIGKILL cannot close its MLflow run, so the next process that opens the store
does it. Every run the logger starts, and every run a session continues as its own (a resumed
fit), records its owner in tags: ``viper.owner.host`` (host name), ``viper.owner.pid``,
``viper.owner.started`` (the process's start time, epoch seconds, from psutil), and, where the
kernel tells, ``viper.owner.boot`` (boot id) and ``viper.owner.pidns`` (pid namespace, which tells
containers of one host apart). :func:`reap_dead_runs` (called by every ``MLflowLogger`` on rank 0,
so by each ``lightning fit|validate|test|predict`` and each run of ``viper compare``, and by
``viper summary``) marks a RUNNING run KILLED when its owner was a process of this very host (same
name, boot and pid namespace) that is gone: its pid no longer exists, is a zombie, or now belongs
to a process with another start time (pid reuse). The run gets ``killed_by`` (why) and
``killed_detected`` (when, and by which process). Runs of other hosts (or of this host before a
reboot, or of another container) cannot be checked from here and are left RUNNING; so are runs
recorded before owners were (no ``viper.owner.host`` tag). :func:`describe_running` says which.

Without psutil the start time is not recorded, and a live pid counts as the owner only if its
command line names lightning or viper.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from lightning_viper.tracking.store import STORE_ERRORS

log = logging.getLogger(__name__)

TAG_HOST = "viper.owner.host"
TAG_PID = "viper.owner.pid"
TAG_STARTED = "viper.owner.started"
TAG_BOOT = "viper.owner.boot"
TAG_PIDNS = "viper.owner.pidns"
TAG_KILLED_BY = "killed_by"
TAG_DETECTED = "killed_detected"
START_TOLERANCE_S = 2.0  # two readings of one process's start time differ by the boot time's rounding
GONE_PREFIX = "the process ended without closing the run (kill -9, out of memory)"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _pidns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return None


def process_started(pid: int) -> float | None:
    """The start time of process ``pid`` in epoch seconds (psutil), or None without psutil or pid."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclass(frozen=True)
class Owner:
    """The process that owns a RUNNING run: the one that will close it."""

    host: str
    pid: int
    started: float | None = None
    boot: str | None = None
    pidns: str | None = None

    @classmethod
    def this_process(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_started(pid), _read("/proc/sys/kernel/random/boot_id"), _pidns())

    def tags(self) -> dict[str, str]:
        tags = {TAG_HOST: self.host, TAG_PID: str(self.pid)}
        optional = {TAG_STARTED: self.started, TAG_BOOT: self.boot, TAG_PIDNS: self.pidns}
        tags.update({k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in optional.items() if v is not None})
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Owner | None:
        """The owner recorded in a run's tags; None for a run recorded without one."""
        if TAG_HOST not in tags or not tags.get(TAG_PID, "").isdigit():
            return None
        started = tags.get(TAG_STARTED)
        return cls(
            tags[TAG_HOST],
            int(tags[TAG_PID]),
            float(started) if started else None,
            tags.get(TAG_BOOT),
            tags.get(TAG_PIDNS),
        )

    def where(self) -> str:
        return f"pid {self.pid} on {self.host}"


class Verdict(Enum):
    ALIVE = "alive"  # the owner process runs on this host
    GONE = "gone"  # the owner was a process of this host and is no longer there
    NOT_HERE = "not verified"  # another host, boot or container: cannot be checked from here
    UNKNOWN = "no owner"  # the run records no owner


def judge(owner: Owner | None, here: Owner) -> tuple[Verdict, str]:
    """Is ``owner`` still running, as seen from the process ``here``? The verdict and a reason."""
    if owner is None:
        return Verdict.UNKNOWN, "no owner recorded (a run started before owners were recorded): not verified"
    if owner.host != here.host:
        return Verdict.NOT_HERE, f"other host: {owner.where()}, not verified"
    if owner.boot and here.boot and owner.boot != here.boot:
        return Verdict.NOT_HERE, f"{owner.where()} before a reboot, or on another machine of that name: not verified"
    if owner.pidns and here.pidns and owner.pidns != here.pidns:
        return Verdict.NOT_HERE, f"{owner.where()} in another container (pid namespace {owner.pidns}): not verified"
    return _judge_pid(owner)


def _judge_pid(owner: Owner) -> tuple[Verdict, str]:
    try:
        import psutil
    except ImportError:
        return _judge_pid_without_psutil(owner)
    try:
        proc = psutil.Process(owner.pid)
        started, status = proc.create_time(), proc.status()
    except psutil.NoSuchProcess:
        return Verdict.GONE, f"{owner.where()} no longer exists"
    except psutil.AccessDenied:
        return Verdict.ALIVE, f"{owner.where()} is alive (another user's process)"
    if status == psutil.STATUS_ZOMBIE:
        return Verdict.GONE, f"{owner.where()} has exited (a zombie)"
    if owner.started is not None:
        if abs(started - owner.started) > START_TOLERANCE_S:
            return (
                Verdict.GONE,
                f"{owner.where()} is now another process (started {_iso(started)}, not {_iso(owner.started)})",
            )
        return Verdict.ALIVE, f"{owner.where()} is alive"
    try:
        command = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return Verdict.ALIVE, f"{owner.where()} is alive"
    return _judge_command(owner, command)


def _judge_pid_without_psutil(owner: Owner) -> tuple[Verdict, str]:
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return Verdict.GONE, f"{owner.where()} no longer exists"
    except PermissionError:
        return Verdict.ALIVE, f"{owner.where()} is alive (another user's process)"
    command = _read(f"/proc/{owner.pid}/cmdline")
    if command is None:
        return Verdict.ALIVE, f"{owner.where()} is alive"
    return _judge_command(owner, command.replace("\0", " "))


def _judge_command(owner: Owner, command: str) -> tuple[Verdict, str]:
    """No start time to compare: a live pid is the owner only if it runs lightning or viper."""
    if "lightning" in command or "viper" in command:
        return Verdict.ALIVE, f"{owner.where()} is alive"
    return Verdict.GONE, f"{owner.where()} is now another program ({command[:200]!r}), not a lightning or viper process"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def describe_running(run: Run, here: Owner | None = None) -> str:
    """``RUNNING (...)`` with what is known of a RUNNING run's process, for ``viper summary``."""
    _, reason = judge(Owner.from_tags(run.data.tags), here or Owner.this_process())
    return f"RUNNING ({reason})"


def _running_runs(client: MlflowClient, host: str) -> list[Run]:
    experiments: list[str] = []
    token = None
    while True:
        found = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        experiments += [e.experiment_id for e in found]
        token = found.token
        if not token:
            break
    query = f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'"
    runs: list[Run] = []
    for i in range(0, len(experiments), 100):
        token = None
        while True:
            page = client.search_runs(experiments[i : i + 100], query, ViewType.ACTIVE_ONLY, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    return runs


def reap_dead_runs(client: MlflowClient, here: Owner | None = None) -> list[str]:
    """Mark KILLED every RUNNING run whose owner was a process of this host that is gone; return their ids.

    A failed read or write of the store is logged as a warning and ends the sweep: it is
    housekeeping, and the caller's own work goes on (or fails on its own, with its own message)."""
    here = here or Owner.this_process()
    reaped: list[str] = []
    try:
        for run in _running_runs(client, here.host):
            owner = Owner.from_tags(run.data.tags)
            verdict, reason = judge(owner, here)
            if verdict is not Verdict.GONE:
                continue
            fresh = client.get_run(run.info.run_id)  # a resume may have claimed it since the search
            if fresh.info.status != "RUNNING" or Owner.from_tags(fresh.data.tags) != owner:
                continue
            now = time.time()
            client.set_tag(run.info.run_id, TAG_KILLED_BY, f"{GONE_PREFIX}: {reason}"[:5000])
            client.set_tag(run.info.run_id, TAG_DETECTED, f"{_iso(now)} by {here.where()} ({_program()})")
            client.set_terminated(run.info.run_id, "KILLED", end_time=int(now * 1000))
            log.warning(
                "MLflow run %s (%s) was RUNNING but %s: marked KILLED. Resume it with --ckpt_path last "
                "if it left a checkpoint",
                run.info.run_id,
                run.info.run_name,
                reason,
            )
            reaped.append(run.info.run_id)
    except STORE_ERRORS as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning("could not check the MLflow store for runs whose process died: %s", first)
    return reaped


def _program() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run (see the module docstring)."""
    return Owner.this_process().tags()
