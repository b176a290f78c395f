"""The server process behind :mod:`phi_finetune.local.server`: load the model, bind 127.0.0.1,
run uvicorn until SIGTERM/SIGINT, and a watchdog that stops when the launching process is gone."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from phi_finetune._atomic import atomic_write_json
from phi_finetune.errors import LocalBackendError
from phi_finetune.local.batching import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH_SIZE

logger = logging.getLogger("phi_finetune.local.server")

__all__ = ["ServerLimits", "create_app", "run_server"]

DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_PROMPT_CHARS = 50_000
DEFAULT_MAX_NUM_BEAMS = 4
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5
DEFAULT_MAX_CONNECTIONS = 256
HOST = "127.0.0.1"
#: Set in every server process: it never reaches a hub and MLflow sends no telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def server_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a server process: this one's, offline, with this package importable."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **OFFLINE_ENV, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@attrs.frozen
class ServerLimits:
    """The request, connection and batching limits of one local server (one object instead of
    eleven keyword arguments; see :mod:`phi_finetune.local.server` for what each bounds)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS
    max_batch: int = DEFAULT_MAX_BATCH
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    max_num_beams: int = DEFAULT_MAX_NUM_BEAMS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE

    @classmethod
    def of(cls, limits: ServerLimits | None, arguments: Mapping[str, Any]) -> ServerLimits:
        """``limits`` (or the defaults) with those of ``arguments`` (a caller's ``locals()``)
        that are named after a field and were given (not ``None``)."""
        given = {
            f.name: arguments[f.name]
            for f in attrs.fields(cls)
            if arguments.get(f.name) is not None
        }
        return attrs.evolve(limits or cls(), **given)


def create_app(
    model: Any,
    tokenizer: Any,
    *,
    key: str,
    model_name: str = "model",
    limits: ServerLimits | None = None,
    max_body_bytes: int | None = None,
    max_new_tokens_limit: int | None = None,
    max_batch: int | None = None,
    max_prompt_chars: int | None = None,
    max_num_beams: int | None = None,
    body_timeout: float | None = None,
    batch_window_ms: float | None = None,
    max_batch_size: int | None = None,
) -> Any:
    """The FastAPI app serving ``model`` (see the module docstring for the contract).

    ``limits`` bounds requests; the single keyword arguments (kept for compatibility) override
    its fields.
    """
    from phi_finetune.local._app import build_app
    from phi_finetune.local._chat import context_length
    from phi_finetune.local.request_limits import RequestLimits

    chosen = ServerLimits.of(limits, locals())
    request_limits = RequestLimits(
        max_body_bytes=chosen.max_body_bytes,
        max_new_tokens=chosen.max_new_tokens_limit,
        max_batch=chosen.max_batch,
        max_prompt_chars=chosen.max_prompt_chars,
        max_num_beams=chosen.max_num_beams,
        context_length=context_length(model),
    )
    return build_app(
        model,
        tokenizer,
        key=key,
        model_name=model_name,
        max_body_bytes=chosen.max_body_bytes,
        max_new_tokens_limit=chosen.max_new_tokens_limit,
        max_batch=chosen.max_batch,
        limits=request_limits,
        body_timeout=chosen.body_timeout,
        batch_window_ms=chosen.batch_window_ms,
        max_batch_size=chosen.max_batch_size,
    )


def _watch_parent(parent_pid: int) -> None:
    """Exit when the launching process is gone (safety net when it was killed hard)."""

    def loop() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                logger.warning("launching process %d is gone; stopping", parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except PermissionError:  # pragma: no cover - a pid reused by another user
                return

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def run_server(
    model_uri: str,
    *,
    key: str,
    port: int = 0,
    tracking_uri: str | None = None,
    max_body_bytes: int | None = None,
    max_new_tokens_limit: int | None = None,
    max_batch: int | None = None,
    ready_file: str | None = None,
    on_ready: Callable[[int], None] | None = None,
    threads: int | None = None,
    max_prompt_chars: int | None = None,
    max_num_beams: int | None = None,
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    keep_alive_timeout: int | None = None,
    max_connections: int | None = None,
    batch_window_ms: float | None = None,
    max_batch_size: int | None = None,
    limits: ServerLimits | None = None,
    model_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Load ``model_uri`` and serve it on 127.0.0.1 until SIGTERM/SIGINT (blocking).

    ``model_dir``, when given, is the model folder ``model_uri`` was resolved to (by the
    launcher, from the registry): it is loaded directly, without MLflow. Otherwise a
    ``models:/`` URI is resolved to its artifact folder through the registry, and only a model
    that is not a phi_finetune chat model goes through a full MLflow pyfunc load.
    ``threads`` sets torch's intra-op threads (1 is fastest for tiny models on a busy CPU).
    ``limits`` bounds requests and connections; the single keyword arguments (kept for
    compatibility) override its fields.
    """
    chosen = ServerLimits.of(limits, locals())
    import uvicorn

    from phi_finetune.local._connection_guard import guarded_protocol

    if threads:
        import torch

        torch.set_num_threads(threads)

    from phi_finetune.local.registry import load_chat_model

    model, tokenizer = load_chat_model(model_uri, tracking_uri=tracking_uri, model_dir=model_dir)
    app = create_app(model, tokenizer, key=key, model_name=model_uri, limits=chosen)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when
    # the socket says TCP; without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise LocalBackendError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from exc
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=chosen.keep_alive_timeout,
        # The guard bounds connections (uvicorn's limit_concurrency would count idle ones and
        # answer 503 to real clients); one request runs per connection, so tasks are bounded too.
        limit_concurrency=None,
        http=guarded_protocol(
            header_timeout=chosen.header_timeout, max_connections=chosen.max_connections
        ),
    )
    server = uvicorn.Server(config)
    if ready_file:
        atomic_write_json(ready_file, {"port": bound_port, "pid": os.getpid()})
    if on_ready is not None:
        on_ready(bound_port)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
