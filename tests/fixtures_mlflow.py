"""New sqlite MLflow stores for tests, their tables copied from one template instead of built each time.

MLflow builds and migrates its tables the first time it opens a sqlite store: 1.5-3 s per store on the
project's 2-core CPU. Here MLflow's own ``_initialize_tables`` builds them once per session into a
template (tables and schema version only, no experiment), and a new store gets a copy of it, in a few
milliseconds. Everything after the tables (the ``Default`` experiment, its artifact root) MLflow then
does as for any store.

``tables_from_template`` makes MLflow copy the template at the moment it would build the tables, so
what creates a store and when stays as it was (a config error that must create no store still
creates none). tests/conftest.py keeps it on for every test that runs after MLflow was imported.
Stores made in subprocesses are built by MLflow as usual.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEMPLATE = "mlflow-tables.db"
_mlflow_builder: Callable[[Any], None] | None = None  # MLflow's own _initialize_tables, kept on first use


def _template(cache: Path) -> Path:
    """``cache/mlflow-tables.db``, built by MLflow on the first call."""
    path = cache / TEMPLATE
    if path.is_file():
        return path
    import mlflow.store.db.utils as db_utils  # imported here: seconds, and only tests with a store need it
    import sqlalchemy

    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f".{TEMPLATE}.{os.getpid()}"
    engine = sqlalchemy.create_engine(f"sqlite:///{building}")
    try:
        _builder(db_utils)(engine)
    finally:
        engine.dispose()
    os.replace(building, path)
    return path


def _builder(db_utils: Any) -> Callable[[Any], None]:
    """MLflow's own table builder, also while ``tables_from_template`` has replaced it."""
    global _mlflow_builder
    if _mlflow_builder is None:
        if not callable(getattr(db_utils, "_initialize_tables", None)):
            raise RuntimeError(
                "this MLflow has no mlflow.store.db.utils._initialize_tables: update tests/fixtures_mlflow.py "
                "to the function that now builds a new store's tables"
            )
        _mlflow_builder = db_utils._initialize_tables
    return _mlflow_builder


@contextlib.contextmanager
def tables_from_template(cache: Path) -> Iterator[None]:
    """While inside, MLflow gives a new sqlite file store its tables by copying the template (sqlite's
    backup API, through the store's own connection); other stores are built by MLflow as usual."""
    import mlflow.store.db.utils as db_utils

    build = _builder(db_utils)

    def initialize(engine: Any) -> None:
        if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
            build(engine)
            return
        with contextlib.closing(sqlite3.connect(_template(cache))) as source, engine.connect() as conn:
            source.backup(conn.connection.dbapi_connection)

    previous = db_utils._initialize_tables
    db_utils._initialize_tables = initialize
    try:
        yield
    finally:
        db_utils._initialize_tables = previous
