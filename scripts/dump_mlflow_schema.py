"""Write the empty MLflow SQLite schema of the installed MLflow as SQL into the package.

A new local tracking store is then made from that SQL in milliseconds instead of MLflow's
alembic migrations (seconds), on the first run too. Run it after changing the MLflow pin:

    python scripts/dump_mlflow_schema.py

tests/test_local_fast_start.py checks that the shipped SQL builds the schema MLflow itself
builds, and that the pinned MLflow version has one.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import mlflow
    from mlflow.store.db import utils as db_utils

    from phi_finetune.local._mlflow_store import shipped_schema_path

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "schema.db"
        engine = db_utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{db}")
        try:
            db_utils._initialize_tables(engine)
        finally:
            engine.dispose()
        with sqlite3.connect(db) as connection:
            sql = "\n".join(connection.iterdump()) + "\n"
    out = shipped_schema_path(mlflow.__version__)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".sql.tmp")
    partial.write_text(sql, encoding="utf-8")
    partial.replace(out)
    print(f"wrote {out.relative_to(ROOT)} ({len(sql):,} characters, MLflow {mlflow.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
