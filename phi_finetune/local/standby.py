"""A local endpoint process started before its model exists: it imports torch, transformers
and the web stack while the model trains, then waits for the server's command line.

``python -m phi_finetune.local.standby`` is the process; :class:`ServerStandby` starts it and
hands it to :meth:`LocalServer.start <phi_finetune.local.server.LocalServer.start>`, which sends
the command line (and the key) as one JSON line on its stdin. The process holds no model, port
or key until then, and it exits by itself when its launcher closes stdin or dies (stdin's end of
the pipe closes with it, even on SIGKILL), or after ``idle_timeout`` seconds without a command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from phi_finetune.constants import ENV_SERVER_KEY
from phi_finetune.errors import LocalBackendError
from phi_finetune.local._serve_process import _watch_parent, server_environment

logger = logging.getLogger("phi_finetune.local.server")

__all__ = ["DEFAULT_IDLE_TIMEOUT", "ServerStandby"]

#: How long a standby process waits for its command before it exits (seconds).
DEFAULT_IDLE_TIMEOUT = 3600.0

#: What the server process imports before it can load a model (most of its start time).
_PRELOAD = (
    "torch",
    "transformers",
    "fastapi",
    "uvicorn",
    "phi_finetune.local.model_loading",
    "phi_finetune.local.registry",
    "phi_finetune.local._app",
    "phi_finetune.local._connection_guard",
    "phi_finetune.local.server",
)


class ServerStandby:
    """Start a standby server process now; :meth:`launch` turns it into the server later.

    ``log_path`` receives the process's output (the server's log once launched); ``model_type``
    (a transformers ``model_type`` such as ``"phi3"``) also imports that architecture's modeling
    code ahead. :meth:`stop` terminates a standby that was never launched.
    """

    def __init__(
        self,
        log_path: str | os.PathLike[str],
        *,
        model_type: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.log_path = Path(log_path)
        self.model_type = model_type
        self.idle_timeout = idle_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ServerStandby(pid={self.pid}, alive={self.alive})"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        """True while the process waits for its command."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> ServerStandby:
        """Spawn the process (returns at once; its imports run in the background)."""
        if self._process is not None:
            return self
        command = [
            sys.executable,
            "-m",
            "phi_finetune.local.standby",
            "--parent-pid",
            str(os.getpid()),
            "--idle-timeout",
            str(self.idle_timeout),
        ]
        if self.model_type:
            command += ["--model-type", self.model_type]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                env=server_environment(),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logger.debug("standby server process started (pid %s)", self._process.pid)
        return self

    def launch(self, argv: Sequence[str], key: str) -> subprocess.Popen[bytes]:
        """Send the server's arguments and key; the process is the caller's from now on.

        Raises :class:`~phi_finetune.errors.LocalBackendError` when the standby is gone (the
        caller then starts a server the usual way).
        """
        process = self._process
        if process is None or process.poll() is not None or process.stdin is None:
            raise LocalBackendError("the standby server process is not running")
        line = json.dumps({"argv": list(argv), "key": key}) + "\n"
        try:
            process.stdin.write(line.encode("utf-8"))
            process.stdin.close()
        except OSError as exc:
            self.stop()
            raise LocalBackendError("the standby server process went away") from exc
        self._process = None
        return process

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a standby that was not launched: SIGTERM at once (it holds nothing to save and
        reads its stdin only after its imports), SIGKILL after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            # Again every half second: one SIGTERM very early in the child's start-up has been
            # seen to go without effect (tests/test_local_standby.py).
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.5)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=timeout)


# --------------------------------------------------------------------------- the process


def _preload(model_type: str | None) -> None:
    started = time.perf_counter()
    names = list(_PRELOAD)
    if model_type and model_type.isidentifier():
        names.append(f"transformers.models.{model_type}.modeling_{model_type}")
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the real load reports it properly later
            logger.warning("standby: could not import %s ahead (%s)", name, exc)
    logger.debug("standby: imports done in %.2f s", time.perf_counter() - started)


def _wait_for_command(idle_timeout: float) -> str:
    """One line from stdin, or ``""`` on end of file or after ``idle_timeout`` s."""
    readable, _, _ = select.select([sys.stdin], [], [], idle_timeout)
    if not readable:
        logger.warning("standby: no model to serve within %.0f s; exiting", idle_timeout)
        return ""
    return sys.stdin.readline()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phi_finetune.local.standby``: import ahead, then run the server."""
    parser = argparse.ArgumentParser(prog="python -m phi_finetune.local.standby")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    parser.add_argument("--model-type", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.parent_pid:
        _watch_parent(args.parent_pid)
    _preload(args.model_type)
    line = _wait_for_command(args.idle_timeout)
    if not line.strip():
        return 0
    try:
        command = json.loads(line)
        server_argv = [str(a) for a in command["argv"]]
        key = str(command["key"])
    except (ValueError, KeyError, TypeError):
        sys.stderr.write("error: the standby's command is not the JSON its launcher sends\n")
        return 2
    os.environ[ENV_SERVER_KEY] = key
    from phi_finetune.local.server import main as serve

    return serve(server_argv)


if __name__ == "__main__":  # pragma: no cover - the process entry point
    raise SystemExit(main())
