"""Answering one intercepted request: an injected fault, else the first matching route."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from phi_finetune.testing._http import (
    FakeRequest,
    Reply,
    azure_error,
    parse_request,
    redact_request,
    to_transport_response,
)
from phi_finetune.testing._router import Route
from phi_finetune.testing._state import Fault
from phi_finetune.testing._store import FakeStore

__all__ = ["Dispatcher", "all_routes"]


def all_routes() -> list[Route]:
    """Every route of the fake, in matching order."""
    from phi_finetune.testing import (
        _routes_assets,
        _routes_endpoints,
        _routes_jobs,
        _routes_registry,
        _routes_serverless,
        _routes_workspace,
    )

    return [
        *_routes_workspace.ROUTES,
        *_routes_registry.ROUTES,
        *_routes_jobs.ROUTES,
        *_routes_assets.ROUTES,
        *_routes_endpoints.ROUTES,
        *_routes_serverless.ROUTES,
    ]


class Dispatcher:
    """Routes requests to handlers over ``store``, applies faults, and records every request."""

    def __init__(self, store: FakeStore, routes: list[Route]) -> None:
        self.store = store
        self.routes = routes
        self.unrouted: list[FakeRequest] = []
        """Requests no route answered (they got a 501); a test may assert this stays empty."""
        self._requests: list[FakeRequest] = []
        self._faults: list[Fault] = []
        self.auth_check: Callable[[FakeRequest, Mapping[str, str]], Reply | None] | None = None
        """Answers a request with a 401 before any route when it returns a reply."""

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request received, in order (a copy; headers are redacted)."""
        with self.store.lock:
            return list(self._requests)

    def find(
        self,
        method: str | None,
        path_contains: str | None,
        host_contains: str | None,
        route: str | None,
    ) -> list[FakeRequest]:
        """Recorded requests matching every filter that is not ``None``."""
        found = []
        for req in self.requests:
            if method is not None and req.method != method.upper():
                continue
            if path_contains is not None and path_contains.lower() not in req.path.lower():
                continue
            if host_contains is not None and host_contains.lower() not in req.host:
                continue
            if route is not None and req.route != route:
                continue
            found.append(req)
        return found

    def clear(self) -> None:
        """Forget the recorded requests (the unrouted ones too)."""
        with self.store.lock:
            self._requests.clear()
            self.unrouted.clear()

    # ------------------------------------------------------------------ faults

    def add_fault(self, fault: Fault) -> None:
        with self.store.lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self.store.lock:
            self._faults.clear()

    # ------------------------------------------------------------------ answering

    def send(self, request: Any, **kwargs: Any) -> Any:
        """Answer an azure-core request as ``RequestsTransport.send`` would."""
        from azure.core.exceptions import ServiceResponseError, ServiceResponseTimeoutError

        stream = bool(kwargs.get("stream"))
        with self.store.lock:
            fake_req, raw_headers = parse_request(request)
            lost = None
            for fault in self._faults:
                if fault.matches(fake_req.method, fake_req.url):
                    fault.hits += 1
                    if fault.lost_reply is not None:
                        lost = fault
                        break
                    if fault.connection_reset:
                        self._requests.append(_with(fake_req, "fault", None))
                        raise ServiceResponseError(
                            "Connection aborted: ConnectionResetError(104, 'Connection reset by "
                            "peer') (injected by FakeAzureML)",
                            error=ConnectionResetError(104, "Connection reset by peer"),
                        )
                    if fault.read_timeout:
                        import requests

                        self._requests.append(_with(fake_req, "fault", None))
                        cause = requests.exceptions.ReadTimeout(
                            "Read timed out. (read timeout=300) (injected by FakeAzureML)"
                        )
                        raise ServiceResponseTimeoutError(cause, error=cause)
                    reply = fault.answer()
                    self._requests.append(_with(fake_req, "fault", reply.status))
                    return to_transport_response(request, reply, stream=stream)
            denied = self.auth_check(fake_req, raw_headers) if self.auth_check else None
            route_name: str | None
            if denied is not None:
                reply, route_name = denied, "auth.denied"
            else:
                with self.store.serving(raw_headers, fake_req.method, fake_req.url):
                    reply, route_name = self._route(fake_req)
            recorded = _with(fake_req, route_name, reply.status)
            self._requests.append(recorded)
            if route_name is None:
                self.unrouted.append(recorded)
            if lost is not None:
                raise _lost_reply(lost.lost_reply)
            return to_transport_response(request, reply, stream=stream)

    def _route(self, req: FakeRequest) -> tuple[Reply, str | None]:
        target = req.host + req.path
        for r in self.routes:
            if r.method != req.method and r.method != "*":
                continue
            match = r.pattern.fullmatch(target)
            if match is None:
                continue
            return r.handler(self.store, req, match), r.name
        return (
            azure_error(
                501,
                "NotImplementedInFake",
                f"FakeAzureML has no route for {req.method} {req.host}{req.path}",
            ),
            None,
        )


def _with(req: FakeRequest, route: str | None, status: int | None) -> FakeRequest:
    """The log's copy of ``req``: credentials and SAS signatures redacted."""
    return attrs.evolve(redact_request(req), route=route, status=status)


def _lost_reply(kind: str | None) -> Exception:
    """The error a client sees when the service acted but its reply never arrived."""
    from azure.core.exceptions import ServiceResponseError, ServiceResponseTimeoutError

    if kind == "timeout":
        return ServiceResponseTimeoutError(
            "Read timed out (the service applied the request; reply lost, injected by FakeAzureML)",
            error=TimeoutError("read timed out"),
        )
    return ServiceResponseError(
        "Connection aborted: ConnectionResetError(104, 'Connection reset by peer') (the service "
        "applied the request; reply lost, injected by FakeAzureML)",
        error=ConnectionResetError(104, "Connection reset by peer"),
    )
