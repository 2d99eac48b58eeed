"""MLflow stores fail at logger setup, in seconds and with a message, instead of retrying for minutes."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_viper.tracking import MLflowLogger
from lightning_viper.tracking import store as store_module
from lightning_viper.tracking.store import TrackingStoreError

HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


@pytest.fixture(autouse=True)
def _clean_http_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logger sets MLflow's HTTP bounds in os.environ; restore the environment afterwards."""
    for name in HTTP_ENV:
        monkeypatch.setenv(name, "0")  # records the original state for teardown
        monkeypatch.delenv(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_tracking_server_that_is_down_fails_in_seconds() -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingStoreError, match=r"is not reachable \(.*; waited up to 2 s\).*mlflow server"):
        MLflowLogger(tracking_uri=uri, request_timeout=2)
    assert time.monotonic() - start < 5
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"  # later requests are bounded too
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


@pytest.fixture
def health_server() -> Iterator[str]:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_answers_is_accepted_and_the_environment_wins(
    health_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    logger = MLflowLogger(tracking_uri=health_server, request_timeout=3)
    assert logger.tracking_uri == health_server
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # a value the user set is kept
    with pytest.raises(TrackingStoreError, match=r"answered HTTP 404 .* check the URI"):
        MLflowLogger(tracking_uri=f"{health_server}/no-mlflow-here", request_timeout=3)


def test_an_unopenable_sqlite_store_fails_in_seconds(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").mkdir()  # sqlite cannot open it: MLflow retries this for ~100 s
    start = time.monotonic()
    with pytest.raises(TrackingStoreError, match="is not a database file"):
        MLflowLogger(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert time.monotonic() - start < 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_store_fails_at_setup(tmp_path: Path) -> None:
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(0o555)
    try:
        with pytest.raises(TrackingStoreError, match="cannot be created"):
            MLflowLogger(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    finally:
        store.chmod(0o755)
    assert not (store / "mlflow.db").exists()


def test_a_store_on_a_full_disk_fails_at_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = type("usage", (), {"total": 2**30, "used": 2**30, "free": 0})()
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: full)
    with pytest.raises(TrackingStoreError, match=r"is full \(0.00 MiB free\)"):
        MLflowLogger(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()
