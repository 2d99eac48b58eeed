"""Runs whose owner process is gone end KILLED; runs of other hosts and live owners stay RUNNING.

Real processes (a child that has exited, a live child that is no lightning process, this process)
and a real sqlite MLflow store read back with MlflowClient.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lightning_viper.tracking.liveness import (
    TAG_DETECTED,
    TAG_KILLED_BY,
    Owner,
    Verdict,
    judge,
    owner_tags,
    reap_dead_runs,
)


def _exited_pid() -> int:
    """The pid of a child that has exited and been reaped (no process has it now)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is neither lightning nor viper."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def test_the_verdicts_on_real_processes(sleeper: subprocess.Popen[bytes]) -> None:
    here = Owner.this_process()
    assert here.started is not None, "psutil is installed in the project's environment"
    assert judge(here, here)[0] is Verdict.ALIVE
    dead = dataclasses.replace(here, pid=_exited_pid())
    assert judge(dead, here) == (Verdict.GONE, f"pid {dead.pid} on {here.host} no longer exists")
    reused = dataclasses.replace(here, started=here.started - 3600)  # this pid, but an older process had it
    verdict, reason = judge(reused, here)
    assert verdict is Verdict.GONE and "is now another process" in reason
    no_start = dataclasses.replace(here, pid=sleeper.pid, started=None)  # an owner recorded without psutil
    verdict, reason = judge(no_start, here)
    assert verdict is Verdict.GONE and "not a lightning or viper process" in reason
    assert judge(dataclasses.replace(here, host="elsewhere"), here) == (
        Verdict.NOT_HERE,
        f"other host: pid {here.pid} on elsewhere, not verified",
    )
    other_container = dataclasses.replace(dead, pidns="pid:[1]")  # its pid means nothing in this namespace
    assert judge(other_container, here)[0] is Verdict.NOT_HERE
    assert judge(None, here)[0] is Verdict.UNKNOWN
    assert Owner.from_tags(here.tags()) == here


def test_reap_marks_only_this_hosts_dead_runs_killed(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    here = Owner.this_process()
    experiments = [client.create_experiment("a"), client.create_experiment("b")]
    dead_pid = _exited_pid()
    owners = {
        "dead": {**here.tags(), "viper.owner.pid": str(dead_pid)},
        "alive": owner_tags(),
        "other-host": {**here.tags(), "viper.owner.host": "elsewhere", "viper.owner.pid": str(dead_pid)},
        "no-owner": {},
    }
    ids = {
        name: client.create_run(experiments[i % 2], tags=tags).info.run_id
        for i, (name, tags) in enumerate(owners.items())
    }
    finished = client.create_run(experiments[1], tags=owners["dead"]).info.run_id
    client.set_terminated(finished, "FINISHED")

    assert reap_dead_runs(client) == [ids["dead"]]
    run = client.get_run(ids["dead"])
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags[TAG_KILLED_BY] == (
        "the process ended without closing the run (kill -9, out of memory): "
        f"pid {dead_pid} on {here.host} no longer exists"
    )
    assert run.data.tags[TAG_DETECTED].endswith(f"UTC by pid {here.pid} on {here.host} ({Path(sys.argv[0]).name})")
    for name in ("alive", "other-host", "no-owner"):
        assert client.get_run(ids[name]).info.status == "RUNNING", name
    assert client.get_run(finished).info.status == "FINISHED"
    assert reap_dead_runs(client) == [], "a second look finds nothing more"
