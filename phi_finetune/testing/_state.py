"""Internal state records of the fake service (scripts, faults, long-running operations)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from phi_finetune.testing._http import Reply

__all__ = ["DeploymentScript", "Fault", "JobScript", "JobState", "Operation"]


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

    def matches(self, method: str, url: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.pattern.search(url) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@attrs.define
class JobScript:
    """How the next submitted pipeline job behaves."""

    outcome: str
    statuses: list[str]
    failing_step: str | None
    error_message: str | None
    logs: list[str]
    name: str | None = None


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
