"""A new SQLite MLflow store from a known empty schema instead of MLflow's migrations.

MLflow builds a new ``sqlite:///`` store by running every alembic migration (1.4-8 s on a
2-core machine, most of the local fine-tune step's overhead). The resulting empty schema is
the same for every store of one MLflow version. For the MLflow version the project pins, the
package ships it as SQL (``_mlflow_schema/mlflow-<version>.sql``, written by
``scripts/dump_mlflow_schema.py``), so even the first store is made in milliseconds; for any
other version it is built once in the user's cache folder and copied. MLflow then finds the
schema current and only adds its ``Default`` experiment, exactly as for a store it built
itself. Anything unexpected (an MLflow without the helper, an unwritable cache, another process
creating the same store) falls back to MLflow's own creation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from phi_finetune.constants import ENV_CACHE_DIR, cache_dir

logger = logging.getLogger(__name__)

__all__ = ["ENV_CACHE_DIR", "schema_cache_dir", "seed_sqlite_store", "shipped_schema_path"]

_PREFIX = "sqlite:///"
_SHIPPED_DIR = Path(__file__).with_name("_mlflow_schema")


def shipped_schema_path(mlflow_version: str) -> Path:
    """Where the package keeps the empty schema (SQL) of ``mlflow_version``."""
    return _SHIPPED_DIR / f"mlflow-{mlflow_version}.sql"


def schema_cache_dir() -> Path:
    """The folder holding the cached empty MLflow schemas (``$PHI_FINETUNE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/phi_finetune`` or ``~/.cache/phi_finetune``)."""
    return cache_dir()


def seed_sqlite_store(uri: str) -> bool:
    """Put an empty, current MLflow schema at a ``sqlite:///`` ``uri`` whose file is missing.

    Returns whether it did; ``False`` (nothing changed, MLflow creates the store as usual)
    for other URIs, an existing file or any failure.
    """
    if not uri.startswith(_PREFIX) or "?" in uri:
        return False
    target = Path(uri[len(_PREFIX) :])
    if str(target) in ("", ":memory:") or target.exists():
        return False
    try:
        shipped = shipped_schema_path(metadata.version("mlflow"))
        if shipped.is_file():
            sql = shipped.read_text(encoding="utf-8")
            target.parent.mkdir(parents=True, exist_ok=True)
            return _write_exclusive(target, lambda tmp: _execute(sql, tmp))
        template = _template()
        if template is None:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        return _write_exclusive(target, lambda tmp: shutil.copyfile(template, tmp))
    except Exception as exc:  # a speed-up only: any failure leaves the usual path
        logger.debug("no cached MLflow schema for %s: %s", uri, exc)
        return False


def _template() -> Path | None:
    """The cached empty schema for this MLflow version, built on first use."""
    from phi_finetune.local._chat import no_mlflow_telemetry

    no_mlflow_telemetry()
    import mlflow
    from mlflow.store.db import utils as db_utils

    initialize = getattr(db_utils, "_initialize_tables", None)
    make_engine = getattr(db_utils, "create_sqlalchemy_engine_with_retry", None)
    if initialize is None or make_engine is None:
        return None
    cache = schema_cache_dir()
    template = cache / f"mlflow-{mlflow.__version__}-schema.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=template.name, suffix=".tmp", dir=cache)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # SQLite creates the file itself
        engine = make_engine(f"{_PREFIX}{tmp}")
        try:
            initialize(engine)
        finally:
            engine.dispose()
        tmp.replace(template)  # atomic: a racing process sees a whole file or none
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return template


def _execute(sql: str, path: Path) -> None:
    """Build the SQLite database at ``path`` (an empty file) from ``sql``."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(sql)
    finally:
        connection.close()


def _write_exclusive(target: Path, fill: Callable[[Path], object]) -> bool:
    """Fill a temporary file with ``fill`` and link it to ``target`` unless ``target`` appears
    meanwhile (never overwrite)."""
    fd, tmp_name = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fill(tmp)
        try:
            os.link(tmp, target)  # fails if another process created the store first
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
