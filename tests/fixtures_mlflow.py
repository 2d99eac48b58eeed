"""Empty sqlite MLflow stores for tests, copied from one migrated template instead of built each time.

MLflow creates and migrates its tables the first time a sqlite store is opened (1-3 s on the
project's 2-core CPU); a copy of an empty store made once opens in a few tens of milliseconds and
holds the same schema and the same ``Default`` experiment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

TEMPLATE = "mlflow-empty.db"


def _template(cache: Path) -> Path:
    """``cache/mlflow-empty.db``, created on the first call (MLflow builds its tables there)."""
    path = cache / TEMPLATE
    if path.is_file():
        return path
    from mlflow.tracking import MlflowClient  # imported here: seconds, and only tests with a store need it

    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f".{TEMPLATE}.{os.getpid()}"
    # MLflow puts the Default experiment's artifacts under the creating process's ./mlruns: keep them in cache
    with contextlib.chdir(cache):
        MlflowClient(f"sqlite:///{building}").search_experiments()
    os.replace(building, path)
    return path


def empty_mlflow_store(db: Path, cache: Path) -> str:
    """Put an empty, migrated sqlite MLflow store at ``db`` unless a file is there already; its URI.

    Args:
        db: the store's file (its folder is created).
        cache: a folder kept for the whole test session, where the template is made once.
    """
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(cache), db)
    return f"sqlite:///{db}"
