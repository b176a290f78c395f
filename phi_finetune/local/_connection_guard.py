"""Connection limits for the local endpoint's uvicorn server (imported by the server process).

uvicorn answers 503 to every request once ``limit_concurrency`` connections are open, idle ones
included, and has no timeout for a connection that never sends a request head, so idle
connections without a key could starve real clients. :func:`guarded_protocol` makes an h11
protocol class that:

- closes a connection that has not sent a complete request head within ``header_timeout`` s
  (counted from when it opened, or from the first byte of a later keep-alive request);
- keeps at most ``max_connections`` open: a new connection over the limit evicts the connection
  that has waited longest for a request head (a connection with a request in flight is never
  evicted); when every connection is busy the new one gets ``503`` with ``Retry-After``.

Body timeouts are the app's (it answers ``408``); idle keep-alive is uvicorn's
``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("phi_finetune.local.server")

_BUSY_BODY = b'{"error": "the local endpoint is busy; retry in a while"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _GuardedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    max_connections: int = 256

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since = time.monotonic()
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._evict_one():
            self.connections.discard(self)
            transport.write(_BUSY)
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.waiting_for_head():
            if self._head_timer is None:
                self._waiting_since = time.monotonic()
                self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.waiting_for_head():
            # Idle again: uvicorn's keep-alive timer runs; evictable from now on.
            self._waiting_since = time.monotonic()

    def waiting_for_head(self) -> bool:
        """No request in flight on this connection."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.waiting_for_head() and not self.transport.is_closing():
            self.transport.close()

    def _evict_one(self) -> bool:
        idle = [
            c
            for c in self.connections
            if c is not self
            and isinstance(c, _GuardedH11Protocol)
            and c.waiting_for_head()
            and not c.transport.is_closing()
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._waiting_since)
        self.connections.discard(oldest)
        oldest.transport.close()
        return True


def guarded_protocol(*, header_timeout: float, max_connections: int) -> Any:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )
