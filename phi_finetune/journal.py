"""A crash-safe run journal: what a run did, and every resource it created.

One JSON file per run, ``<state_dir>/runs/<run_id>/journal.json``, rewritten atomically (temp
file + rename, mode 0600) after every mutation, so a crash or a kill at any point leaves either
the previous state or the new one on disk, never half of one. Callers write *before* a remote
call (``begin_step``, ``record_resource(..., state="creating")``) and *after* it
(``complete_step``, ``record_resource(..., state="created")``), so a resumed run knows what may
exist even when the process died while the call was in flight.

No secrets are stored: every string that goes in is scrubbed with :mod:`phi_finetune._redact`
and values under secret-looking keys (``key``, ``token``, ``password``, ...) are masked.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from phi_finetune._atomic import atomic_write_json
from phi_finetune._redact import REDACTED, redact
from phi_finetune._run_lock import DRIVE_WAIT_S, WRITE_WAIT_S, RunLock, run_lock
from phi_finetune.constants import DEFAULT_STATE_DIR, STATE_DIR_ENV, default_state_dir
from phi_finetune.errors import RunStateError
from phi_finetune.journal_records import (
    ResourceKind,
    ResourceRecord,
    ResourceState,
    RunSummary,
    StepRecord,
    StepStatus,
    resource_from,
    step_from,
)
from phi_finetune.journal_schema import (
    READABLE_FORMATS,
    RESOURCE_STATES,
    STEP_STATUSES,
    journal_problems,
)

__all__ = [
    "BILLABLE_KINDS",
    "DEFAULT_STATE_DIR",
    "FORMAT_VERSION",
    "READABLE_FORMATS",
    "RESOURCE_KINDS",
    "STATE_DIR_ENV",
    "Journal",
    "ResourceKind",
    "ResourceRecord",
    "ResourceState",
    "RunSummary",
    "StepRecord",
    "StepStatus",
    "default_state_dir",
    "list_runs",
    "new_run_id",
    "scrub",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
JOURNAL_FILE = "journal.json"
WRITE_LOCK_FILE = ".journal.lock"
DRIVE_LOCK_FILE = ".driver.lock"
FILE_MODE = 0o600
DIR_MODE = 0o700

RESOURCE_KINDS: tuple[str, ...] = (
    "data_asset",
    "compute",
    "job",
    "model",
    "endpoint",
    "deployment",
    "local_server",
    "local_model",
    "marketplace_subscription",
)
#: Kinds that cost money while they exist (the default of ``record_resource(billable=...)``).
BILLABLE_KINDS = frozenset({"compute", "endpoint", "deployment"})
_STEP_STATUSES = STEP_STATUSES
_RESOURCE_STATES = RESOURCE_STATES

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SECRET_KEY = re.compile(
    r"(?i)(^|[_.-])(key|keys|primary_key|secondary_key|api_key|token|access_token|secret|"
    r"password|passwd|credential|credentials|connection_string|sas|authorization)$"
)


def new_run_id(*, now: _dt.datetime | None = None) -> str:
    """A unique run id that sorts by creation time: ``20260130T142501123Z-3f9a1c``."""
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def scrub(value: Any, secrets: Sequence[str] = ()) -> Any:
    """A JSON-safe copy of ``value`` with secrets masked (used for everything stored):
    values under secret-looking keys, bearer tokens, JWTs, key fields and ``secrets``."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if _SECRET_KEY.search(name) and item not in (None, "", [], {}):
                out[name] = REDACTED
            else:
                out[name] = scrub(item, secrets)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(item, secrets) for item in value]
    if isinstance(value, str):
        return redact(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, os.PathLike):
        return redact(os.fspath(value), secrets)
    if attrs.has(type(value)):
        return scrub(attrs.asdict(value), secrets)
    return redact(str(value), secrets)


def _run_dir(state_dir: str | os.PathLike[str], run_id: str) -> Path:
    return Path(state_dir).expanduser() / "runs" / run_id


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
        raise RunStateError(
            f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(see `phi-finetune status` for the ids of existing runs)"
        )
    return run_id


class Journal:
    """The journal of one run. Build with :meth:`create` or :meth:`load`; every mutating
    method persists the whole journal before it returns."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self._path = path
        self._data = data
        self._secrets: list[str] = []

    def add_secret(self, secret: str | None) -> None:
        """Mask ``secret`` (e.g. an endpoint key this process holds) in everything written
        from now on. Kept in memory only."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        state_dir: str | os.PathLike[str],
        run_id: str | None = None,
        *,
        backend: str,
        config: Mapping[str, Any] | None = None,
    ) -> Journal:
        """Start the journal of a new run (``run_id`` generated when omitted)."""
        run_id = _check_run_id(run_id) if run_id is not None else new_run_id()
        run_dir = _run_dir(state_dir, run_id)
        path = run_dir / JOURNAL_FILE
        if path.exists():
            raise RunStateError(
                f"run {run_id} already has a journal at {path}; resume it with "
                f"`phi-finetune resume {run_id}` or pick another run id"
            )
        run_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        with contextlib.suppress(OSError):
            run_dir.chmod(DIR_MODE)
        now = _now()
        data: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "run_id": run_id,
            "backend": backend,
            "config": scrub(dict(config or {})),
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
            "seq": 0,
            "steps": {},
            "resources": [],
        }
        journal = cls(path, data)
        with journal._write_lock().held():
            if path.exists():
                raise RunStateError(
                    f"run {run_id} already has a journal at {path}; resume it with "
                    f"`phi-finetune resume {run_id}` or pick another run id"
                )
            journal._save()
        logger.info("run %s: journal created at %s", run_id, path)
        return journal

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str], run_id: str) -> Journal:
        """Open an existing run's journal; :class:`RunStateError` when unknown or unreadable."""
        _check_run_id(run_id)
        path = _run_dir(state_dir, run_id) / JOURNAL_FILE
        if not path.is_file():
            raise RunStateError(
                f"no run {run_id!r} under {Path(state_dir).expanduser()}: "
                "list the known runs with `phi-finetune status`, or point --state-dir "
                f"(or ${STATE_DIR_ENV}) at the folder the run was started with"
            )
        return cls(path, _read(path))

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @property
    def run_dir(self) -> Path:
        """The run's folder (holds the journal and files such as ``sample_score.json``)."""
        return self._path.parent

    @property
    def run_id(self) -> str:
        return str(self._data["run_id"])

    @property
    def backend(self) -> str:
        return str(self._data["backend"])

    @property
    def config(self) -> dict[str, Any]:
        """The (scrubbed) run configuration snapshot taken at :meth:`create`."""
        return json.loads(json.dumps(self._data["config"]))  # type: ignore[no-any-return]

    @property
    def created_at(self) -> str:
        return str(self._data["created_at"])

    @property
    def updated_at(self) -> str:
        return str(self._data["updated_at"])

    @property
    def finished_at(self) -> str | None:
        value = self._data.get("finished_at")
        return None if value is None else str(value)

    @property
    def steps(self) -> dict[str, StepRecord]:
        """Every step seen so far, in workflow order (unknown step names last, by name)."""
        from phi_finetune.steps import STEPS

        order = {name: index for index, name in enumerate(STEPS)}
        names = sorted(self._data["steps"], key=lambda n: (order.get(n, len(order)), n))
        return {name: step_from(self._data["steps"][name]) for name in names}

    def get_step(self, name: str) -> StepRecord | None:
        raw = self._data["steps"].get(name)
        return None if raw is None else step_from(raw)

    def is_completed(self, name: str) -> bool:
        step = self.get_step(name)
        return step is not None and step.status == "completed"

    @property
    def last_completed_step(self) -> str | None:
        """The step completed most recently (``None`` before any completes)."""
        done = [
            (raw.get("completed_seq", 0), name)
            for name, raw in self._data["steps"].items()
            if raw["status"] == "completed"
        ]
        return max(done)[1] if done else None

    @property
    def status(self) -> str:
        """``failed`` / ``running`` when a step is; ``completed`` after :meth:`finish` or once
        ``teardown`` is the last step completed; else ``incomplete`` (stopped between steps,
        e.g. killed) or ``new``."""
        statuses = [raw["status"] for raw in self._data["steps"].values()]
        if "failed" in statuses:
            return "failed"
        if "running" in statuses:
            return "running"
        if self._data.get("finished_at") or self.last_completed_step == "teardown":
            return "completed"
        return "incomplete" if statuses else "new"

    def outputs_of(self, step: str) -> dict[str, Any]:
        """The outputs recorded when ``step`` completed; :class:`RunStateError` if it has not."""
        raw = self._data["steps"].get(step)
        if raw is None or raw["status"] != "completed":
            state = "never ran" if raw is None else f"is {raw['status']}"
            raise RunStateError(
                f"run {self.run_id}: step {step!r} {state}, so it has no outputs; "
                f"resume the run with `phi-finetune resume {self.run_id}`"
            )
        return json.loads(json.dumps(raw.get("outputs", {})))  # type: ignore[no-any-return]

    def record_of(self, step: str) -> Any:
        """The typed record (:mod:`phi_finetune.steps`) ``step`` completed with;
        :class:`RunStateError` if it has not completed or its outputs do not read."""
        from phi_finetune.steps import record_from_dict

        return record_from_dict(
            step, self.outputs_of(step), source=f"run {self.run_id} (journal {self._path})"
        )

    # ------------------------------------------------------------------ steps
    def begin_step(self, name: str, inputs: Mapping[str, Any] | None = None) -> StepRecord:
        """Record that ``name`` starts now (persisted before the caller's remote call).

        Beginning a step again (after a failure, a kill, or to redo a completed one) counts
        another attempt and clears its previous outputs and error.
        """
        with self._mutating():
            raw = self._data["steps"].get(name)
            if raw is not None and raw["status"] == "completed":
                logger.info("run %s: step %s completed before; running it again", self.run_id, name)
            attempts = int(raw.get("attempts", 0)) if raw else 0
            self._data["steps"][name] = {
                "name": name,
                "status": "running",
                "inputs": self._scrub(dict(inputs or {})),
                "outputs": {},
                "started_at": _now(),
                "finished_at": None,
                "error": None,
                "attempts": attempts + 1,
            }
        return step_from(self._data["steps"][name])

    def complete_step(self, name: str, outputs: Mapping[str, Any] | None = None) -> StepRecord:
        """Record that ``name`` finished with ``outputs``."""
        with self._mutating():
            raw = self._data["steps"].get(name)
            if raw is None or raw["status"] != "running":
                state = "was never begun" if raw is None else f"is {raw['status']}, not running"
                raise RunStateError(
                    f"run {self.run_id}: cannot complete step {name!r}: it {state}; "
                    "call begin_step first"
                )
            self._data["seq"] = int(self._data.get("seq", 0)) + 1
            raw.update(
                status="completed",
                outputs=self._scrub(dict(outputs or {})),
                finished_at=_now(),
                error=None,
                completed_seq=self._data["seq"],
            )
        return step_from(raw)

    def fail_step(self, name: str, error: BaseException | str) -> StepRecord:
        """Record that ``name`` failed (the message is scrubbed of secrets)."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._mutating():
            raw = self._data["steps"].get(name)
            if raw is None:
                raw = self._data["steps"][name] = {
                    "name": name,
                    "status": "failed",
                    "inputs": {},
                    "outputs": {},
                    "started_at": None,
                    "attempts": 1,
                }
            raw.update(
                status="failed", finished_at=_now(), error=redact(message, self._secrets)[:4000]
            )
        return step_from(raw)

    @contextlib.contextmanager
    def step(self, name: str, inputs: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run a block as step ``name``: begun on entry, completed with the dict the block
        fills in as outputs, failed (and re-raised) when the block raises."""
        self.begin_step(name, inputs)
        outputs: dict[str, Any] = {}
        try:
            yield outputs
        except BaseException as exc:
            self.fail_step(name, exc if str(exc) else f"{type(exc).__name__}")
            raise
        self.complete_step(name, outputs)

    def finish(self) -> None:
        """Mark the whole run as finished (its status becomes ``completed``)."""
        with self._mutating():
            self._data["finished_at"] = _now()

    @contextlib.contextmanager
    def driving(self, *, wait_s: float = DRIVE_WAIT_S) -> Iterator[None]:
        """Hold the run for the block so no other process runs or resumes it meanwhile.

        A second process waits ``wait_s`` seconds, then gets :class:`RunInUseError` naming the
        holder's pid. Reentrant within one process; released when the holder exits or dies.
        """
        lock = run_lock(
            self._path.with_name(DRIVE_LOCK_FILE),
            run_id=self.run_id,
            purpose="run or resumed",
            wait_s=DRIVE_WAIT_S,
        )
        with lock.held(wait_s=wait_s):
            yield

    # ------------------------------------------------------------------ resources
    def record_resource(
        self,
        kind: str,
        name: str,
        *,
        version: str | int | None = None,
        created_by_run: bool = True,
        billable: bool | None = None,
        state: ResourceState = "created",
        details: Mapping[str, Any] | None = None,
    ) -> ResourceRecord:
        """Add or update a resource (identified by kind, name and version).

        ``billable`` defaults to whether the kind costs money while it exists (compute,
        endpoint, deployment). ``details`` are merged into what was recorded before.
        """
        if kind not in RESOURCE_KINDS:
            raise RunStateError(
                f"unknown resource kind {kind!r}; use one of {', '.join(RESOURCE_KINDS)}"
            )
        if state not in _RESOURCE_STATES:
            raise RunStateError(
                f"unknown resource state {state!r}; use one of {', '.join(_RESOURCE_STATES)}"
            )
        ver = None if version is None else str(version)
        with self._mutating():
            now = _now()
            existing = self._find(kind, name, ver)
            if existing is None:
                existing = {
                    "kind": kind,
                    "name": name,
                    "version": ver,
                    "created_by_run": created_by_run,
                    "billable": kind in BILLABLE_KINDS if billable is None else billable,
                    "state": state,
                    "details": {},
                    "created_at": now,
                }
                self._data["resources"].append(existing)
            else:
                existing["created_by_run"] = bool(existing["created_by_run"] or created_by_run)
                if billable is not None:
                    existing["billable"] = billable
                existing["state"] = state
            existing["details"] = {
                **existing.get("details", {}),
                **self._scrub(dict(details or {})),
            }
            existing["updated_at"] = now
        return resource_from(existing)

    def mark_deleted(
        self, kind: str, name: str, *, version: str | int | None = None
    ) -> ResourceRecord | None:
        """Record that a resource is gone (``None`` when the journal never knew it)."""
        with self._mutating():
            found = self._find(kind, name, None if version is None else str(version))
            if found is None:
                return None
            found["state"] = "deleted"
            found["updated_at"] = _now()
        return resource_from(found)

    def resources(
        self, *, billable_only: bool = False, alive_only: bool = False, kind: str | None = None
    ) -> list[ResourceRecord]:
        """Recorded resources, in the order they were first recorded."""
        out = [resource_from(raw) for raw in self._data["resources"]]
        if billable_only:
            out = [r for r in out if r.billable]
        if alive_only:
            out = [r for r in out if r.alive]
        if kind is not None:
            out = [r for r in out if r.kind == kind]
        return out

    def resource(
        self, kind: str, name: str | None = None, *, version: str | int | None = None
    ) -> ResourceRecord | None:
        """The resource of ``kind`` (and ``name``/``version`` when given) recorded last."""
        for raw in reversed(self._data["resources"]):
            if raw["kind"] != kind or (name is not None and raw["name"] != name):
                continue
            if version is not None and raw.get("version") != str(version):
                continue
            return resource_from(raw)
        return None

    def summary(self) -> RunSummary:
        """This run as one :class:`RunSummary`."""
        return RunSummary(
            run_id=self.run_id,
            backend=self.backend,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            last_completed_step=self.last_completed_step,
            alive_resources=tuple(self.resources(alive_only=True)),
            path=self._path,
        )

    def to_dict(self) -> dict[str, Any]:
        """A copy of the journal's JSON document."""
        return json.loads(json.dumps(self._data))  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (
            f"Journal(run_id={self.run_id!r}, backend={self.backend!r}, status={self.status!r}, "
            f"last_completed_step={self.last_completed_step!r})"
        )

    # ------------------------------------------------------------------ internals
    def _find(self, kind: str, name: str, version: str | None) -> dict[str, Any] | None:
        for raw in self._data["resources"]:
            if raw["kind"] == kind and raw["name"] == name and raw.get("version") == version:
                return raw  # type: ignore[no-any-return]
        return None

    def _scrub(self, value: Any) -> Any:
        return scrub(value, self._secrets)

    def _save(self) -> None:
        self._data["updated_at"] = _now()
        atomic_write_json(self._path, self._data, mode=FILE_MODE)

    def _write_lock(self) -> RunLock:
        return run_lock(
            self._path.with_name(WRITE_LOCK_FILE),
            run_id=self.run_id,
            purpose="written",
            wait_s=WRITE_WAIT_S,
        )

    @contextlib.contextmanager
    def _mutating(self) -> Iterator[None]:
        """Change the journal under the run's write lock: the latest file is re-read first
        (another process may have written since), so no writer loses another's records; the
        result is saved when the block ends without an exception."""
        with self._write_lock().held():
            _remove_stale_temp_files(self._path)
            if self._path.is_file():
                self._data = _read(self._path)
            yield
            self._save()


def _read(path: Path) -> dict[str, Any]:
    fix = (
        f"the journal {path} cannot be used: restore it from a backup, or delete its folder "
        "after checking in the Azure ML studio that the run left nothing running"
    )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        problems = journal_problems(data)
        if not problems and data["format"] != FORMAT_VERSION:
            from phi_finetune.journal_migrate import migrate

            data = migrate(data, target=FORMAT_VERSION)
            problems = journal_problems(data)
    except RecursionError:
        raise RunStateError(f"{fix} (it is nested too deeply to be a journal)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunStateError(f"{fix} ({type(exc).__name__}: {exc})") from exc
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise RunStateError(f"{fix} ({shown})")
    return data  # type: ignore[no-any-return]


def _remove_stale_temp_files(journal_path: Path) -> None:
    """Delete temp files a killed writer left beside the journal (call under the write lock:
    no live writer has one open then)."""
    for tmp in journal_path.parent.glob(f".{journal_path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            logger.debug("removed %s, left by a writer that was killed", tmp)


def list_runs(state_dir: str | os.PathLike[str] | None = None) -> list[RunSummary]:
    """Every run under ``state_dir`` (oldest first) with what it still holds.

    A journal that cannot be read is listed with ``status="unreadable"`` and ``error`` set
    rather than hiding the run.
    """
    root = Path(state_dir).expanduser() if state_dir is not None else default_state_dir()
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        return []
    out: list[RunSummary] = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        path = run_dir / JOURNAL_FILE
        if not path.is_file():
            continue
        try:
            out.append(Journal(path, _read(path)).summary())
        except (RunStateError, ValueError, TypeError, KeyError, RecursionError) as exc:
            # One bad journal must never hide the others: it is listed as unreadable.
            out.append(
                RunSummary(
                    run_id=run_dir.name,
                    backend="?",
                    status="unreadable",
                    created_at="",
                    updated_at="",
                    last_completed_step=None,
                    alive_resources=(),
                    path=path,
                    error=str(exc) if isinstance(exc, RunStateError) else f"{path}: {exc!r}",
                )
            )
    return out
