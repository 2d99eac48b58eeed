"""`lightning fit` of the demo as a user's job sees it: NaN, SIGTERM/SIGINT, kill -9, then resume.

Each test runs the CLI in a subprocess (exit codes and signals are the point) on the trimmed demo,
with the recipe's NanGuard and Preemption callbacks, and reads the results back from MLflow. A run
left RUNNING by ``kill -9`` is marked KILLED by the next process that opens the store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lightning_viper.cli.viper import main as viper
from tests.cli.conftest import write_overlay

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes" / "demo.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def _overlays(tmp_path: Path, synth_cache: Path, every_n_train_steps: int) -> list[str]:
    """The conftest overlay, plus the recipe's guards, a frequent last.ckpt and a progress file."""
    base = write_overlay(tmp_path, synth_cache)
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(
        f"""
trainer:
  val_check_interval: 1000
  enable_progress_bar: false
  callbacks:
    - class_path: lightning_viper.callbacks.NanGuard
      init_args: {{patience: 3}}
    - class_path: lightning_viper.callbacks.Preemption
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path / "ckpt"}, save_last: true, every_n_train_steps: {every_n_train_steps}}}
    - class_path: tests.cli.progress_file.ProgressFile
      init_args: {{path: {tmp_path / "step"}}}
data:
  init_args: {{num_workers: 1}}
"""
    )
    return ["--config", str(DEMO), "--config", str(base), "--config", str(callbacks)]


def _fit_cmd(config: list[str], *overrides: str) -> list[str]:
    return [sys.executable, "-m", "lightning_viper.cli.main", "fit", *config, *overrides]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _run(tmp_path: Path, cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=tmp_path, env=_env(**env), capture_output=True, text=True, timeout=600)


def _the_run(tmp_path: Path) -> tuple[MlflowClient, Run]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, f"expected one MLflow run, found {len(runs)}"
    return client, runs[0]


def _steps(client: MlflowClient, run: Run, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def _assert_no_duplicate_steps(client: MlflowClient, run: Run) -> None:
    for key in run.data.metrics:
        steps = _steps(client, run, key)
        assert len(steps) == len(set(steps)), f"{key} logged some steps twice: {steps}"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_nan_stops_the_fit_fails_the_run_and_keeps_good_checkpoints(tmp_path: Path, synth_cache: Path) -> None:
    config = _overlays(tmp_path, synth_cache, every_n_train_steps=1)
    proc = _run(tmp_path, _fit_cmd(config, "--trainer.max_steps=20", "--model.init_args.lr=1e6"))
    assert proc.returncode != 0, proc.stderr[-3000:]
    # step 0 is the warmup's first step (learning rate 0: transformers' cosine schedule starts at 0),
    # step 1 trains (finite loss) and throws the weights far off; step 2's loss is NaN
    assert "ERROR lightning_viper: training stopped at step 2: loss nan" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, "the message alone, without Lightning's traceback"

    _, run = _the_run(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("training stopped at step 2: loss nan")
    assert run.data.tags["nan_guard_step"] == "2"

    files = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert files == ["epoch=0-step=2.ckpt", "last.ckpt"], files  # nothing written from step 2 on
    for name in files:
        ckpt = _load(tmp_path / "ckpt" / name)
        assert ckpt["global_step"] == 2
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values()), name


def _start_and_signal(tmp_path: Path, cmd: list[str], signum: int, at_step: int) -> tuple[int, str]:
    """Start the fit in its own process group, signal the group once ``at_step`` is reached."""
    step_file = tmp_path / "step"
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not (step_file.is_file() and int(step_file.read_text() or 0) >= at_step):
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate(timeout=60)
                pytest.fail(f"the fit ended or stalled before step {at_step} (rc {proc.returncode}):\n{err[-3000:]}")
            time.sleep(0.02)
        os.killpg(proc.pid, signum)  # the whole group, as a terminal's Ctrl+C or a cluster's preemption does
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_resumable_checkpoint_and_kills_the_run(
    tmp_path: Path, synth_cache: Path, signum: signal.Signals
) -> None:
    config = _overlays(tmp_path, synth_cache, every_n_train_steps=1000)  # no periodic checkpoint: only the signal's
    rc, err = _start_and_signal(tmp_path, _fit_cmd(config, "--trainer.max_steps=500"), signum, at_step=3)
    assert rc == 128 + signum, err[-3000:]
    assert f"received {signum.name} at step" in err

    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_file(), err[-3000:]
    assert not list((tmp_path / "ckpt").glob(".*tmp")), "no temporary file left behind"
    step = _load(last)["global_step"]
    assert 3 <= step < 500

    client, run = _the_run(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags["killed_by"].startswith(f"{signum.name}: checkpoint saved to {last} at step {step}")
    assert run.data.tags["killed_at_step"] == str(step)
    run_id = run.info.run_id

    if signum == signal.SIGTERM:  # a test of the checkpoint logs into the run and leaves its status alone
        cmd = [sys.executable, "-m", "lightning_viper.cli.main", "test", *config, "--ckpt_path=last"]
        tested = _run(tmp_path, cmd)
        assert tested.returncode == 0, tested.stderr[-3000:]
        _, run = _the_run(tmp_path)
        assert run.info.status == "KILLED"
        assert _steps(client, run, "test/loss") == [step], "logged at the checkpoint's step"

    resumed = _run(tmp_path, _fit_cmd(config, f"--trainer.max_steps={step + 2}", "--ckpt_path=last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _load(last)["global_step"] == step + 2, "the resumed fit went on from the signal's checkpoint"
    client, run = _the_run(tmp_path)
    assert run.info.run_id == run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == str(step)
    assert run.data.tags["interrupted"] == "true"
    assert run.data.tags["last_interruption"].startswith(f"KILLED: {signum.name}: checkpoint saved")
    assert "killed_by" not in run.data.tags
    assert _steps(client, run, "train/loss") == list(range(step + 2))
    _assert_no_duplicate_steps(client, run)


def test_kill_9_before_the_first_checkpoint_ends_the_run_killed_at_the_next_look(
    tmp_path: Path, synth_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _overlays(tmp_path, synth_cache, every_n_train_steps=1000)  # no checkpoint before the kill
    env = _env(VIPER_TEST_KILL_AT="1")
    proc = subprocess.Popen(
        _fit_cmd(config, "--trainer.max_steps=500"), cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert not list((tmp_path / "ckpt").glob("*.ckpt"))
    _, run = _the_run(tmp_path)
    assert run.info.status == "RUNNING"  # the killed process could not close it
    host = socket.gethostname()
    assert (run.data.tags["viper.owner.host"], run.data.tags["viper.owner.pid"]) == (host, str(proc.pid))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    viper(["summary", "--experiment", "demo-test", "--tracking_uri", uri])  # the next process to open the store
    reason = (
        f"the process ended without closing the run (kill -9, out of memory): pid {proc.pid} on {host} no longer exists"
    )
    assert f"status: KILLED ({reason})" in capsys.readouterr().out
    _, run = _the_run(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags["killed_by"] == reason
    assert run.data.tags["killed_detected"].endswith(f"by pid {os.getpid()} on {host} ({Path(sys.argv[0]).name})")


def test_kill_9_then_resume_continues_the_run_without_duplicate_steps(tmp_path: Path, synth_cache: Path) -> None:
    config = _overlays(tmp_path, synth_cache, every_n_train_steps=3)
    killed = _run(tmp_path, _fit_cmd(config, "--trainer.max_steps=500"), VIPER_TEST_KILL_AT="5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    client, run = _the_run(tmp_path)
    assert run.info.status == "RUNNING"  # nobody could close it
    run_id, killed_pid = run.info.run_id, run.data.tags["viper.owner.pid"]
    assert _load(tmp_path / "ckpt" / "last.ckpt")["global_step"] == 3
    logged = _steps(client, run, "train/loss")
    assert max(logged) >= 3, f"the killed fit logged steps past its checkpoint: {logged}"

    resumed = _run(tmp_path, _fit_cmd(config, "--trainer.max_steps=8", "--ckpt_path=last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, run = _the_run(tmp_path)
    assert run.info.run_id == run_id, "the resumed fit continues the killed fit's MLflow run"
    assert run.info.status == "FINISHED"
    assert _steps(client, run, "train/loss") == list(range(8))
    _assert_no_duplicate_steps(client, run)
    tags = run.data.tags
    assert tags["resumed_from_step"] == "3"
    assert tags["interrupted"] == "true"
    assert tags["interruptions"] == "1"
    # the resumed fit's logger found the run's process gone and marked it KILLED before continuing it
    assert tags["last_interruption"] == (
        f"KILLED: the process ended without closing the run (kill -9, out of memory): pid {killed_pid} on "
        f"{socket.gethostname()} no longer exists"
    )
    assert "killed_by" not in tags and "killed_detected" not in tags
    assert tags["viper.owner.pid"] != killed_pid, "the resumed process owns the run now"
    assert tags["replayed_steps"] == f"3-{max(logged)}"
