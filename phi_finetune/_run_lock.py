"""Cross-process locks for one run's folder: who holds them, and a clear error when busy.

Two locks live beside each journal:

- the *write* lock (``.journal.lock``) is held for the few milliseconds of one journal
  mutation (re-read, change, atomic write), so concurrent writers never lose each other's
  records;
- the *driver* lock (``.driver.lock``) is held while a process runs or resumes the run, so a
  second process cannot drive the same run at the same time.

The operating system releases both when the holder dies, even by SIGKILL, so there is no stale
lock to clean up. Each lock has an owner file (pid, host, since) that only serves the error
message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from phi_finetune.errors import RunInUseError

__all__ = ["RunLock", "lock_owner", "run_lock"]

#: How long a writer waits for another writer's mutation before giving up (seconds).
WRITE_WAIT_S = 10.0
#: How long a second driver waits for the first to let go of the run (seconds).
DRIVE_WAIT_S = 2.0


_LOCKS: dict[tuple[str, str], RunLock] = {}
_LOCKS_GUARD = threading.Lock()


def run_lock(path: Path, *, run_id: str, purpose: str, wait_s: float) -> RunLock:
    """The process-wide :class:`RunLock` for ``path`` (one per file, shared by every
    ``Journal`` of the run in this process)."""
    key = (str(path.absolute()), purpose)
    with _LOCKS_GUARD:
        found = _LOCKS.get(key)
        if found is None:
            found = _LOCKS[key] = RunLock(path, run_id=run_id, purpose=purpose, wait_s=wait_s)
        return found


def lock_owner(lock_path: Path) -> dict[str, object] | None:
    """What the owner file of ``lock_path`` says (pid, host, since), or ``None``."""
    try:
        data = json.loads(_owner_path(lock_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


class RunLock:
    """A reentrant (within this process) and exclusive (across processes) lock on one file.

    ``purpose`` says in the error message what the run is busy with ("written", "driven").
    """

    def __init__(self, path: Path, *, run_id: str, purpose: str, wait_s: float) -> None:
        from filelock import FileLock

        self.path = path
        self.run_id = run_id
        self.purpose = purpose
        self.wait_s = wait_s
        # thread_local=False: one holder per process, counted; threads of this process share it
        # through ``_mutex`` below, which also orders them.
        self._lock = FileLock(str(path), mode=0o600, thread_local=False)
        self._mutex = threading.RLock()

    @contextlib.contextmanager
    def held(self, *, wait_s: float | None = None) -> Iterator[None]:
        """Hold the lock for the block; :class:`RunInUseError` after ``wait_s`` seconds
        (default: the lock's own)."""
        from filelock import Timeout

        wait = self.wait_s if wait_s is None else wait_s
        if not self._mutex.acquire(timeout=wait):
            raise self._busy_error(wait)
        try:
            first = not self._lock.is_locked
            if first:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._lock.acquire(timeout=wait, poll_interval=0.02)
            except Timeout:
                raise self._busy_error(wait) from None
            try:
                if first:
                    self._write_owner()
                yield
            finally:
                self._lock.release()
        finally:
            self._mutex.release()

    def _write_owner(self) -> None:
        # Best effort and deliberately not atomic (no temp file, no rename): the owner file
        # only feeds the error message of a waiting process, which tolerates a torn read.
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        with contextlib.suppress(OSError):
            _owner_path(self.path).write_text(json.dumps(owner), encoding="utf-8")

    def _busy_error(self, waited: float) -> RunInUseError:
        owner = lock_owner(self.path) or {}
        pid = owner.get("pid", "?")
        host = owner.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        return RunInUseError(
            f"run {self.run_id} is in use by process {pid}{where} (it is being {self.purpose}; "
            f"waited {waited:g} s for {self.path}); wait for that process to finish, or "
            "stop it (Ctrl-C) and try again: the run resumes from its journal"
        )
