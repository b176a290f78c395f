"""The local scoring endpoint: the Azure ML chat scoring contract over HTTP on 127.0.0.1.

Why FastAPI + uvicorn (measured on a 2-core machine, see ``local-backend-facts.md``):

=======================================  ==========  ==================  ==========  =======
server                                   ready       Azure request body  p50 greedy  memory
=======================================  ==========  ==================  ==========  =======
``mlflow models serve``                  8-11 s      rejected (400)      11 ms       741 MB
azureml-inference-server-http + score.py 6.4-6.8 s   200                 8 ms        551 MB
FastAPI + uvicorn (this module)          6.3-9 s     200, bad input 4xx  7 ms        555 MB
=======================================  ==========  ==================  ==========  =======

``mlflow models serve`` only takes ``inputs`` / ``dataframe_*`` bodies, so it cannot speak the
Azure contract. The Azure ML inference server is what Azure runs in its containers, but its
``azmlinfsrv`` binds 0.0.0.0 with no host option (a local endpoint must bind 127.0.0.1 only)
and installing it downgrades opentelemetry / pydantic. FastAPI + uvicorn is as fast, the
smallest, binds where we say, and lets us control every response (no tracebacks).

The contract (same as an Azure managed online endpoint):

- ``POST /score`` with ``{"input_data": {"input_string": [<conversation>, ...], "parameters":
  {...}}, "params": {}}``; answers ``{"output": "<text>"}`` for one conversation and
  ``{"output": ["<text>", ...]}`` for several (both parse with
  :func:`phi_finetune.scoring.parse_response`).
- Auth: ``Authorization: Bearer <key>`` (what Azure documents). The bare key
  (``Authorization: <key>``) is accepted too, like Azure's key-auth endpoints do, so clients
  written either way work. No or a wrong key: ``401`` with ``WWW-Authenticate: Bearer``.
- Bad bodies: ``400`` (not JSON or UTF-8, nested too deeply, a lone surrogate in a string),
  ``408`` (body not sent within ``body_timeout``), ``413`` (body over ``max_body_bytes``),
  ``422`` (valid JSON that breaks the contract or a limit: the message names each problem, e.g.
  ``num_beams`` over the cap, a prompt longer than the model's context, a conversation not
  ending with a user turn). Limits: :mod:`phi_finetune.local.request_limits`. ``500`` says only
  "internal error"; the traceback goes to the server log, never into a response.
- Connections: a request head must arrive within ``header_timeout`` s, idle keep-alive
  connections close after ``keep_alive_timeout`` s, and at most ``max_connections`` are open
  (over it the longest-idle one is closed, so idle clients without a key cannot starve real
  ones; :mod:`phi_finetune.local._connection_guard`). A client that disconnects mid-body is
  one warning line in the log.
- ``POST /v1/chat/completions``: the OpenAI chat-completions contract (plain, or server-sent
  events with ``stream``), OpenAI-shaped 400 errors naming the field; same key
  (:mod:`phi_finetune.local.openai_chat`). A client that disconnects stops its generation.
- Batching: concurrent requests of both routes are generated together
  (:mod:`phi_finetune.local.batching`; ``batch_window_ms``, ``max_batch_size``); a greedy request
  gets the same text as alone.
- ``GET /`` and ``GET /health``: liveness, no key needed; batching counters (``batches``,
  ``largest_batch``, ``tokens_generated``).

Started by :class:`LocalServer` as ``python -m phi_finetune.local.server``; the key travels in
the ``PHI_FINETUNE_SERVER_KEY`` environment variable (never on the command line, never logged).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune._redact import redact
from phi_finetune.constants import ENV_SERVER_KEY
from phi_finetune.errors import LocalBackendError, PhiFinetuneError, WaitTimeoutError
from phi_finetune.local._serve_process import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_NUM_BEAMS,
    DEFAULT_MAX_PROMPT_CHARS,
    HOST,
    ServerLimits,
    _watch_parent,
    create_app,
    run_server,
    server_environment,
)
from phi_finetune.local._server_files import remove_server_files
from phi_finetune.local.batching import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH_SIZE
from phi_finetune.scoring import ScoreResult, parse_response

if TYPE_CHECKING:
    from phi_finetune.local.standby import ServerStandby

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_MAX_NUM_BEAMS",
    "DEFAULT_MAX_PROMPT_CHARS",
    "HOST",
    "KEY_ENV",
    "LocalServer",
    "ServerLimits",
    "create_app",
    "main",
    "remove_server_files",
    "run_server",
]

#: Environment variable that carries the endpoint key to the server process.
KEY_ENV = ENV_SERVER_KEY


# --------------------------------------------------------------------------- the process


#: Every :class:`ServerLimits` field is one command-line option of the server process.
_LIMIT_FIELDS: tuple[attrs.Attribute[Any], ...] = tuple(attrs.fields(ServerLimits))


_LIMIT_NAMES = frozenset(f.name for f in _LIMIT_FIELDS)


def _limit_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phi_finetune.local.server``: the process :class:`LocalServer` starts."""
    parser = argparse.ArgumentParser(prog="python -m phi_finetune.local.server")
    parser.add_argument(
        "--model", required=True, help="models:/name@alias, models:/name/N or a folder"
    )
    parser.add_argument(
        "--model-dir", default=None, help="the folder --model resolves to (skips the registry)"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    for field in _LIMIT_FIELDS:
        parser.add_argument(
            _limit_flag(field.name), type=type(field.default), default=field.default
        )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        sys.stderr.write(f"error: set the endpoint key in the {KEY_ENV} environment variable\n")
        return 2
    if args.parent_pid:
        _watch_parent(args.parent_pid)
    limits = ServerLimits(**{f.name: getattr(args, f.name) for f in _LIMIT_FIELDS})
    try:
        run_server(
            args.model,
            key=key,
            port=args.port,
            tracking_uri=args.tracking_uri,
            ready_file=args.ready_file,
            threads=args.threads,
            limits=limits,
            model_dir=args.model_dir,
        )
    except PhiFinetuneError as exc:
        sys.stderr.write(f"error: {redact(str(exc), [key])}\n")
        return 1
    return 0


# --------------------------------------------------------------------------- the launcher


_LIVE: weakref.WeakSet[LocalServer] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class LocalServer:
    """Start, probe and stop the local endpoint process.

    ``model_uri`` is a registry URI (``models:/name@alias``; give ``tracking_uri``) or a model
    folder. A random key is made unless ``key`` is given. :meth:`start` returns once ``GET
    /health`` answers (or raises :class:`~phi_finetune.errors.WaitTimeoutError` after
    ``startup_timeout`` s, :class:`~phi_finetune.errors.LocalBackendError` if the process dies),
    and never leaves a process behind when it fails. :meth:`stop` terminates and reaps it; an
    ``atexit`` hook and a parent-pid watchdog in the server are the safety nets. Use it as a
    context manager to be sure. ``threads`` sets the server's torch intra-op threads.

    The request, connection and batching limits are one :class:`ServerLimits` (``limits``);
    the single keyword arguments (``max_prompt_chars``, ``header_timeout``, ...) override its
    fields and stay readable as attributes. ``model_dir``, the folder ``model_uri`` resolves to
    (:func:`~phi_finetune.local.registry.resolve_model_folder`), makes the server load it
    directly, without MLflow in the server process. :meth:`stop` removes the log file when this
    object chose it (no ``log_path`` given; a failed start keeps it, its error names it) and
    ``key_file``, a file holding this server's key, when one is given.
    """

    def __init__(
        self,
        model_uri: str | os.PathLike[str],
        *,
        key: str | None = None,
        tracking_uri: str | None = None,
        port: int = 0,
        startup_timeout: float = 120.0,
        max_body_bytes: int | None = None,
        max_new_tokens_limit: int | None = None,
        max_batch: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
        max_prompt_chars: int | None = None,
        max_num_beams: int | None = None,
        header_timeout: float | None = None,
        body_timeout: float | None = None,
        keep_alive_timeout: int | None = None,
        max_connections: int | None = None,
        key_file: str | os.PathLike[str] | None = None,
        batch_window_ms: float | None = None,
        max_batch_size: int | None = None,
        limits: ServerLimits | None = None,
        model_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.limits = ServerLimits.of(limits, locals())
        """Request, connection and batching limits (:class:`ServerLimits`)."""
        self.threads = threads
        self.key_file = Path(key_file) if key_file else None
        self.model_uri = os.fspath(model_uri)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        """The folder ``model_uri`` resolves to, loaded directly when given."""
        self._key = key or secrets.token_urlsafe(32)
        self.tracking_uri = tracking_uri
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self._own_log = False
        self.extra_env = dict(env or {})
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def __getattr__(self, name: str) -> Any:
        # The limits were attributes of their own before ServerLimits; keep reading them.
        limits = self.__dict__.get("limits")
        if limits is not None and name in _LIMIT_NAMES:
            return getattr(limits, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        state = f"pid={self.pid}, scoring_uri={self.scoring_uri!r}" if self.running else "stopped"
        return f"LocalServer(model_uri={self.model_uri!r}, {state})"

    @property
    def key(self) -> str:
        """The endpoint key (send as ``Authorization: Bearer <key>``)."""
        return self._key

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def base_uri(self) -> str:
        return f"http://{HOST}:{self.port}" if self.port else ""

    @property
    def scoring_uri(self) -> str:
        return f"{self.base_uri}/score" if self.port else ""

    @property
    def openai_base_url(self) -> str:
        """What to give ``openai.OpenAI(base_url=...)`` (the chat route is under it)."""
        return f"{self.base_uri}/v1" if self.port else ""

    @property
    def chat_uri(self) -> str:
        """The OpenAI-compatible ``/v1/chat/completions`` URL."""
        return f"{self.base_uri}/v1/chat/completions" if self.port else ""

    @property
    def health_uri(self) -> str:
        return f"{self.base_uri}/health" if self.port else ""

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, standby: ServerStandby | None = None) -> LocalServer:
        """Start the process and wait until it is healthy.

        ``standby``, a :class:`~phi_finetune.local.standby.ServerStandby` started earlier
        (its imports done while the model trained), becomes the server process instead of a
        new one; when it is gone, or ``env`` was given, a new process starts as usual.
        """
        global _ATEXIT_REGISTERED
        if self.running:
            return self
        self.port = None  # a restarted server gets the port its new process binds
        self._tmpdir = tempfile.TemporaryDirectory(prefix="phi-finetune-server-")
        ready = Path(self._tmpdir.name) / "ready.json"
        options: dict[str, object] = {
            "--model": self.model_uri,
            "--port": self.requested_port,
            "--ready-file": ready,
            "--parent-pid": os.getpid(),
        }
        for field in _LIMIT_FIELDS:
            options[_limit_flag(field.name)] = getattr(self.limits, field.name)
        arguments: list[str] = []
        for flag, value in options.items():
            arguments += [flag, str(value)]
        if self.tracking_uri:
            arguments += ["--tracking-uri", self.tracking_uri]
        if self.threads:
            arguments += ["--threads", str(self.threads)]
        if self.model_dir is not None:
            arguments += ["--model-dir", str(self.model_dir)]
        self._process = self._launch_standby(standby, arguments)
        if self._process is None:
            if self.log_path is None or self._own_log:
                self.log_path = Path(self._tmpdir.name) / "server.log"
                self._own_log = True
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            env = server_environment({**self.extra_env, KEY_ENV: self._key})
            command = [sys.executable, "-m", "phi_finetune.local.server", *arguments]
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        _LIVE.add(self)
        if not _ATEXIT_REGISTERED:
            atexit.register(_stop_all)
            _ATEXIT_REGISTERED = True
        try:
            self._wait_ready(ready)
        except BaseException:
            self.stop()
            raise
        logger.info("local endpoint %s ready (pid %s)", self.scoring_uri, self.pid)
        return self

    def _launch_standby(
        self, standby: ServerStandby | None, arguments: list[str]
    ) -> subprocess.Popen[bytes] | None:
        if standby is None or self.extra_env:
            return None
        try:
            process = standby.launch(arguments, self._key)
        except LocalBackendError as exc:
            logger.info("%s; starting a new server process", exc)
            return None
        # The standby writes where it was told to; that is this server's log now.
        self.log_path = standby.log_path
        self._own_log = False
        return process

    def _wait_ready(self, ready: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            process = self._process
            assert process is not None
            code = process.poll()
            if code is not None:
                self._keep_log_of_failed_start()
                raise LocalBackendError(
                    f"the local endpoint process exited with code {code} while starting "
                    f"(model {self.model_uri!r}); last log lines:\n{self.log_tail()}\n"
                    f"full log: {self.log_path}"
                )
            if self.port is None and ready.is_file():
                with contextlib.suppress(ValueError, OSError, KeyError):
                    self.port = int(json.loads(ready.read_text(encoding="utf-8"))["port"])
            if self.port is not None and self._healthy():
                return
            if time.monotonic() > deadline:
                self._keep_log_of_failed_start()
                raise WaitTimeoutError(
                    f"the local endpoint for {self.model_uri!r} was not healthy within "
                    f"{self.startup_timeout:.0f} s; raise startup_timeout or read the log "
                    f"{self.log_path}"
                )
            time.sleep(0.05)

    def _keep_log_of_failed_start(self) -> None:
        """Move an own log out of the temp folder: the start error names it."""
        if not self._own_log or self.log_path is None or self._tmpdir is None:
            return
        kept = Path(self._tmpdir.name + ".log")
        with contextlib.suppress(OSError):
            self.log_path.replace(kept)
            self.log_path = kept
        self._own_log = False

    def _healthy(self) -> bool:
        try:
            status, _ = self.request("GET", "/health", timeout=2.0)
        except OSError:
            return False
        return status == 200

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log, with the key scrubbed."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return redact("\n".join(text.splitlines()[-lines:]), [self._key])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after ``timeout`` s) and reap it."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait(timeout=timeout)
            else:
                process.wait()
        _LIVE.discard(self)
        if self._tmpdir is not None:
            with contextlib.suppress(OSError):
                self._tmpdir.cleanup()
            self._tmpdir = None
        if self.key_file is not None:
            remove_server_files(key_file=self.key_file)

    # ----------------------------------------------------------------- client helpers

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> tuple[int, bytes]:
        """One raw HTTP request to the server: ``(status, body)``."""
        if self.port is None:
            raise LocalBackendError("the local endpoint is not started")
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def score(
        self,
        conversations: Sequence[Any],
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float = 60.0,
    ) -> ScoreResult:
        """Score ``conversations`` through HTTP, as a client of the endpoint would."""
        from phi_finetune.errors import InvocationError
        from phi_finetune.scoring import build_request

        body = json.dumps(build_request(conversations, parameters)).encode("utf-8")
        status, answer = self.request(
            "POST",
            "/score",
            body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"},
            timeout=timeout,
        )
        if status != 200:
            raise InvocationError(
                f"the local endpoint answered {status}",
                status=status,
                body_excerpt=answer[:500].decode("utf-8", "replace"),
            )
        return parse_response(answer)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
