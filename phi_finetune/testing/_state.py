"""Internal state records of the fake service (scripts, faults, long-running operations)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from phi_finetune.testing._http import Reply, azure_error

__all__ = ["DeploymentScript", "Fault", "JobScript", "JobState", "Operation"]

_FAULT_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "AuthorizationFailed",
    404: "ResourceNotFound",
    408: "RequestTimeout",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@attrs.define
class Fault:
    """An injected failure: the next ``times`` matching requests fail (``None``: all of them)."""

    method: str | None
    pattern: re.Pattern[str]
    status: int
    times: int | None
    retry_after: float | None
    connection_reset: bool
    reply: Reply
    hits: int = 0
    read_timeout: bool = False

    def matches(self, method: str, url: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.pattern.search(url) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def answer(self) -> Reply:
        """A fresh copy of the fault's reply (a route may not change the stored one)."""
        reply = self.reply
        return Reply(
            status=reply.status, json=reply.json, body=reply.body, headers=dict(reply.headers)
        )

    @classmethod
    def build(
        cls,
        method: str | None,
        url_pattern: str,
        *,
        status: int | None,
        times: int | None,
        retry_after: float | None,
        connection_reset: bool,
        body: Any,
        code: str | None,
        message: str | None,
        quota: bool,
        subscription_id: str,
        read_timeout: bool = False,
    ) -> Fault:
        """The fault ``FakeAzureML.inject_fault`` describes (see there for the arguments)."""
        if status is None:
            status = 400 if quota else 500
        if quota:
            code = code or "QuotaExceeded"
            message = message or (
                "Not enough quota available for the requested VM size in subscription "
                f"{subscription_id}. Current usage/limit: 96/96. Additional needed: 24. "
                "Please request a quota increase."
            )
        code = code or _FAULT_CODES.get(status, "Error")
        message = message or f"Injected fault: {status} {code}."
        if body is None:
            reply = azure_error(status, code, message)
        elif isinstance(body, bytes):
            reply = Reply(status=status, body=body)
        elif isinstance(body, str):
            reply = Reply(status=status, body=body.encode(), headers={"content-type": "text/plain"})
        else:
            reply = Reply(status=status, json=body)
        if retry_after is not None:
            reply.headers["Retry-After"] = f"{retry_after:g}"
        return cls(
            method=method.upper() if method else None,
            pattern=re.compile(url_pattern),
            status=status,
            times=times,
            retry_after=retry_after,
            connection_reset=connection_reset,
            reply=reply,
            read_timeout=read_timeout,
        )


@attrs.define
class JobScript:
    """How the next submitted pipeline job behaves."""

    outcome: str
    statuses: list[str]
    failing_step: str | None
    error_message: str | None
    logs: list[str]
    name: str | None = None

    @classmethod
    def build(
        cls,
        outcome: str = "Completed",
        *,
        statuses: list[str] | None = None,
        failing_step: str | None = None,
        error_message: str | None = None,
        logs: list[str] | None = None,
        name: str | None = None,
    ) -> JobScript:
        """The script ``FakeAzureML.script_job`` describes; no arguments: a job that completes."""
        if statuses is None:
            statuses = ["NotStarted", "Running", outcome]
        if statuses[-1] != outcome:
            statuses = [*statuses, outcome]
        if outcome == "Failed":
            failing_step = failing_step or "chat_completion_finetune"
            error_message = error_message or (
                f"Execution failed. User process in step {failing_step!r} exited with status 1."
            )
        if logs is None:
            logs = [f"step {s}: started" for s in ("model_import", "preprocess", "finetune")]
            if outcome == "Failed":
                logs.append(f"Error: {error_message}")
        return cls(outcome, list(statuses), failing_step, error_message, list(logs), name)


@attrs.define
class JobState:
    """A submitted job: its stored REST body and where it is in its scripted status sequence."""

    name: str
    body: dict[str, Any]
    script: JobScript
    position: int = 0
    canceled: bool = False
    children: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def status(self) -> str:
        if self.canceled:
            return "Canceled"
        return self.script.statuses[min(self.position, len(self.script.statuses) - 1)]

    def advance(self) -> str:
        status = self.status
        if not self.canceled and self.position < len(self.script.statuses) - 1:
            self.position += 1
        return status


@attrs.define
class DeploymentScript:
    """How the next deployment create behaves."""

    outcome: str
    logs: list[str]
    error_message: str | None
    polls: int
    endpoint: str | None = None
    name: str | None = None

    @classmethod
    def build(
        cls,
        outcome: str = "Succeeded",
        logs: list[str] | None = None,
        *,
        polls: int,
        error_message: str | None = None,
        endpoint: str | None = None,
        name: str | None = None,
    ) -> DeploymentScript:
        """The script ``FakeAzureML.script_deployment`` describes; by default a success."""
        if outcome == "Failed":
            error_message = error_message or (
                "ResourceNotReady: User container has crashed or terminated."
            )
        if logs is None:
            logs = ["Starting inference server", "Loading model"]
            logs.append("Model loaded" if outcome == "Succeeded" else f"ERROR {error_message}")
        return cls(outcome, list(logs), error_message, polls, endpoint, name)


@attrs.define
class Operation:
    """A long-running operation: ``polls`` in-progress answers, then ``final`` (and ``on_done``)."""

    op_id: str
    polls: int
    final: str = "Succeeded"
    error: dict[str, Any] | None = None
    on_done: Callable[[], None] | None = None
    done: bool = False
    seen: int = 0

    def abandon(self) -> None:
        """End the operation on its next poll (the service went away while it ran)."""
        if not self.done and self.seen < self.polls:
            self.polls = self.seen
            self.final = "Canceled"

    def poll(self) -> dict[str, Any]:
        if self.seen < self.polls:
            self.seen += 1
            return {"id": self.op_id, "name": self.op_id, "status": "InProgress"}
        if not self.done:
            self.done = True
            if self.on_done is not None:
                self.on_done()
        body: dict[str, Any] = {"id": self.op_id, "name": self.op_id, "status": self.final}
        if self.error is not None:
            body["error"] = self.error
        return body
