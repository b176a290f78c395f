"""One trained local run, shared read-only, and cheap private copies of it for each test.

Training the tiny test model takes ~10-15 s on a small machine, so the local session tests train
it once (:func:`train_shared_run`, up to ``fine_tune``) and each test gets its own copy
(:func:`copy_trained_run`): a new run in the test's own folder whose ``prepare_data``, ``plan``
and ``fine_tune`` steps are journaled with the shared run's records. A copy owns everything it
can change: the data files, the trained model folders and the MLflow store (the training run
that ``register`` logs the model into) are copied into the test's folder, and every absolute
path in the copied records points there. Registering, deploying or failing a step in one test
is never seen by another.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from phi_finetune.cli.demo import demo_config
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession

#: The steps a shared run completes (what training produces); later steps run per test.
TRAINED_STEPS = ("prepare_data", "plan", "fine_tune")
MAX_STEPS = 4


def train_shared_run(root: Path) -> Journal:
    """Train the demo config (``max_steps=4``) in ``root`` up to ``fine_tune``; its journal."""
    session = FineTuneSession.from_config(demo_config(root, max_steps=MAX_STEPS))
    session.fine_tune()
    return session.journal


def copy_trained_run(shared: Journal, shared_root: Path, root: Path) -> FineTuneSession:
    """A new session in ``root`` (laid out as ``demo_config(root)``) whose training steps are
    those of ``shared``, with its own copies of every file they refer to."""
    config = demo_config(root, max_steps=MAX_STEPS)
    state = Path(config.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    journal = Journal.create(state, backend=shared.backend, config=config.to_dict())
    old_root, new_root = str(shared_root), str(root)

    def moved(value: Any) -> Any:
        text = json.dumps(value).replace(old_root, new_root)
        return json.loads(text.replace(shared.run_id, journal.run_id))

    shutil.copytree(shared_root / "data", root / "data")
    shutil.copytree(
        shared.run_dir,
        journal.run_dir,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(shared.path.name),
    )
    _copy_mlflow_store(shared_root / "state", state, old_root, new_root)
    for name in TRAINED_STEPS:
        step = shared.get_step(name)
        assert step is not None and step.status == "completed", f"shared run lacks {name}"
        journal.begin_step(name, inputs=moved(dict(step.inputs)))
        journal.complete_step(name, moved(dict(step.outputs)))
    for resource in shared.resources():
        journal.record_resource(
            resource.kind,
            moved(resource.name),
            version=resource.version,
            created_by_run=resource.created_by_run,
            billable=resource.billable,
            state=resource.state,
            details=moved(dict(resource.details)),
        )
    return FineTuneSession(config, journal=journal)


def _copy_mlflow_store(old_state: Path, new_state: Path, old_root: str, new_root: str) -> None:
    """Copy the sqlite tracking store and its artifact folder; the store keeps absolute artifact
    locations, which are rewritten so nothing a copy logs lands in the shared folder."""
    for entry in old_state.iterdir():
        if entry.name == "runs":
            continue
        if entry.is_dir():
            shutil.copytree(entry, new_state / entry.name)
        else:
            shutil.copy2(entry, new_state / entry.name)
    database = new_state / "mlflow.db"
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = db.execute(f"PRAGMA table_info('{table}')").fetchall()
            for column in (c[1] for c in columns if "CHAR" in c[2].upper() or "TEXT" in c[2]):
                db.execute(
                    f'UPDATE \'{table}\' SET "{column}" = replace("{column}", ?, ?)'
                    f' WHERE "{column}" LIKE ?',
                    (old_root, new_root, f"%{old_root}%"),
                )
    db.close()
    with sqlite3.connect(database) as db:
        db.execute("VACUUM")  # drops the freed pages that still hold the old paths
    db.close()
    leftover = database.read_bytes().count(old_root.encode())
    assert leftover == 0, f"{database} still names {old_root} {leftover} times"
