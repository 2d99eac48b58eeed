"""MLflow stores that fail fast and say why: checks at logger setup, clear errors on failed writes.

At setup (``check_store``), before MLflow opens anything:

* ``sqlite:///PATH``: the database (or, when it does not exist yet, its directory) must be
  writable and its disk must have at least ``MIN_FREE_MB`` free. Otherwise MLflow retries opening
  an unopenable database for about 100 s, or fails on its first write with an SQL traceback.
* ``http(s)://``: ``GET /health`` must answer 200 (or 401/403 from an authentication layer)
  within ``timeout`` seconds. MLflow's own client retries a refused connection for minutes.

MLflow's HTTP client is also bounded for the rest of the run (``bound_http_requests``):
``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` are set from the
logger's ``request_timeout`` and ``request_retries`` unless already set in the environment.

A write that fails later (full disk, store gone read-only, server down) raises
``TrackingStoreError`` naming the store, the operation, the cause and what to do.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

MIN_FREE_MB = 1.0
STORE_ERRORS = (MlflowException, OSError)  # what MLflow's stores raise on a failed read or write
F = TypeVar("F", bound=Callable[..., Any])


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be used; the message says which store, why, and what to do."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for in-memory or other URIs)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///") :].split("?", 1)[0]
    rest = rest.removeprefix("file:")
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def bound_http_requests(timeout: float, retries: int) -> None:
    """Bound MLflow's HTTP client (per-request timeout, retries) unless the environment sets it."""
    for name, value in (
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", math.ceil(timeout)),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries),
    ):
        if name not in os.environ:
            os.environ[name] = str(value)


class _NoTraceback(logging.Filter):
    """Drop the traceback MLflow's sqlite layer logs with each failed statement (the error itself is
    raised, and reported once by ``TrackingStoreError``); ``VIPER_LOG_LEVEL=DEBUG`` keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("VIPER_LOG_LEVEL", "").upper() != "DEBUG":
            record.exc_info, record.exc_text = None, None
        return True


def quiet_store_tracebacks() -> None:
    """Install :class:`_NoTraceback` on MLflow's sqlite logger (once)."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _NoTraceback) for f in logger.filters):
        logger.addFilter(_NoTraceback())


def check_store(uri: str, timeout: float) -> None:
    """Raise ``TrackingStoreError`` if ``uri`` cannot take runs (see the module docstring)."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout)
        return
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(uri, path)


def _check_server(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return  # an authentication layer in front of the server answered: it is up
        raise TrackingStoreError(
            f"MLflow tracking server {uri} answered HTTP {error.code} ({error.reason}) at {url}, where an "
            "MLflow server answers 200: check the URI (host, port, path prefix) and that the server is up"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingStoreError(
            f"MLflow tracking server {uri} is not reachable ({reason}; waited up to {timeout:g} s). Start it "
            "(e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000`), check the URI, "
            "or log locally with --trainer.logger.init_args.tracking_uri=sqlite:///mlflow.db; for a slow "
            "server raise --trainer.logger.init_args.request_timeout"
        ) from None


def _check_sqlite(uri: str, path: Path) -> None:
    elsewhere = "or log elsewhere with --trainer.logger.init_args.tracking_uri=sqlite:///<writable dir>/mlflow.db"
    if path.exists():
        if not path.is_file():
            raise TrackingStoreError(f"MLflow store {uri}: {path} is not a database file; remove it, {elsewhere}")
        if not (os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK)):
            raise TrackingStoreError(
                f"MLflow store {uri} is read-only ({_why_unwritable(path)}): runs cannot be recorded there. "
                f"Make {path} and its directory writable, {elsewhere}"
            )
        directory = path.parent
    else:
        directory = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            raise TrackingStoreError(
                f"MLflow store {uri} cannot be created: {directory} is not a writable directory "
                f"({_why_unwritable(directory)}). Create a writable directory for it, {elsewhere}"
            )
    free_mb = shutil.disk_usage(directory).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise TrackingStoreError(
            f"MLflow store {uri}: the disk under {directory} is full ({free_mb:.2f} MiB free); free space "
            f"there, {elsewhere}"
        )


def _why_unwritable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "a read-only filesystem"
    except OSError as error:
        return error.strerror or str(error)
    return "no write permission for this user"


def describe_failure(uri: str, what: str, error: BaseException) -> str:
    """A user-facing message for a failed store operation ``what`` (e.g. "log metrics at step 12")."""
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain).lower()
    codes = {getattr(x, "errno", None) for x in chain}
    path = sqlite_path(uri)
    where = str(path.absolute().parent) if path is not None else "the store"
    if errno.ENOSPC in codes or errno.EDQUOT in codes or "disk is full" in text or "no space left" in text:
        cause, fix = "the disk is full", f"free space under {where}"
    elif errno.EROFS in codes or "readonly" in text or "read-only" in text:
        cause, fix = "the store is read-only", f"make {where} writable"
    elif "connection" in text or "max retries" in text or "timed out" in text:
        cause, fix = "the tracking server did not answer", "restart or reach the tracking server"
    else:
        first = str(error).strip().splitlines()
        cause, fix = (first[0] if first else type(error).__name__), "check the store"
    return (
        f"MLflow store {uri} could not {what}: {cause}. Training stopped; {fix}, then "
        "resume with --ckpt_path last (the fit continues this MLflow run)"
    )


def store_write(what: str, step_arg: int | None = None) -> Callable[[F], F]:
    """Decorate an ``MLflowLogger`` method: a store error becomes a ``TrackingStoreError`` (once),
    remembered in ``self.store_failure`` so ``finalize`` can record it. ``step_arg``: the position
    of the method's ``step`` argument (after ``self``), named in the message."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except TrackingStoreError:
                raise
            except STORE_ERRORS as error:
                step = kwargs.get("step", args[step_arg] if step_arg is not None and len(args) > step_arg else None)
                at = f" at step {step}" if step is not None else ""
                message = describe_failure(self.tracking_uri, what + at, error)
                self.store_failure = message
                raise TrackingStoreError(message) from error

        return cast(F, inner)

    return wrap
