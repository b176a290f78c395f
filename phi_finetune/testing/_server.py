"""Server mode: a ``FakeAzureML`` answering HTTP on 127.0.0.1, for CLI runs and subprocesses.

``fake.serve()`` starts a ``FakeServer`` on an ephemeral loopback port. A child process with
``server.env()`` in its environment sends every Azure request there: the library activates
``phi_finetune.testing._client_hook`` when ``PHI_FINETUNE_FAKE_AZUREML_URL`` is set. The
original URL travels in the ``X-Phi-Fake-Target`` header; ``/_fake/token`` hands out tokens
of the fake's own credential, so ``fake.credential().expire()`` reaches children too.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from phi_finetune.constants import (
    ENV_FAKE_AZUREML_URL,
    ENV_RESOURCE_GROUP,
    ENV_SUBSCRIPTION_ID,
    ENV_WORKSPACE_NAME,
)
from phi_finetune.testing._tokens import FakeCredential

__all__ = ["TARGET_HEADER", "TOKEN_PATH", "FakeServer"]

TARGET_HEADER = "X-Phi-Fake-Target"
TOKEN_PATH = "/_fake/token"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class FakeServer:
    """A running HTTP front of one ``FakeAzureML``; stop it with ``close()`` or ``with``."""

    def __init__(
        self,
        send: Callable[[Any], Any],
        credential: FakeCredential,
        scope: dict[str, str],
    ) -> None:
        self._send = send
        self._credential = credential
        self._scope = scope
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="FakeAzureML-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point a child process (CLI or library) at this fake."""
        return {
            ENV_FAKE_AZUREML_URL: self.url,
            ENV_SUBSCRIPTION_ID: self._scope["subscription_id"],
            ENV_RESOURCE_GROUP: self._scope["resource_group"],
            ENV_WORKSPACE_NAME: self._scope["workspace_name"],
        }

    def close(self) -> None:
        """Stop serving and join the server thread (bounded)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeServer({self.url!r})"

    # ------------------------------------------------------------------ handling

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the fake's request log (redacted) is the record."""

            def _any(self) -> None:
                server._answer(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _any

        return Handler

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        from azure.core.exceptions import ServiceResponseError
        from azure.core.rest import HttpRequest

        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.path.startswith(TOKEN_PATH):
            self._token(handler)
            return
        target = handler.headers.get(TARGET_HEADER)
        if not target:
            self._write(handler, 400, {"content-type": "text/plain"}, b"no X-Phi-Fake-Target")
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop(TARGET_HEADER, None)
        headers.pop("Host", None)
        request = HttpRequest(handler.command, target, headers=headers, content=body or None)
        try:
            answer = self._send(request)
        except ServiceResponseError:
            handler.close_connection = True  # an injected connection reset: drop the socket
            return
        answer.read()
        reply_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        self._write(handler, answer.status_code, reply_headers, answer.content)

    def _token(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        scopes = parse_qs(urlsplit(handler.path).query).get("scope", [])
        token = self._credential.get_token(*scopes)
        payload = {"token": token.token, "expires_on": token.expires_on}
        self._write(
            handler, 200, {"content-type": "application/json"}, json.dumps(payload).encode()
        )

    @staticmethod
    def _write(
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        content: bytes,
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(content)
