"""Internal state records of the fake service (scripts, faults, long-running operations)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import attrs

from phi_finetune.testing._http import Reply, azure_error

__all__ = [
    "JOB_STATUSES",
    "DeploymentScript",
    "Fault",
    "Hold",
    "JobScript",
    "JobState",
    "Operation",
]

JOB_STATUSES = (
    "NotStarted",
    "Starting",
    "Provisioning",
    "Preparing",
    "Queued",
    "Running",
    "Finalizing",
    "CancelRequested",
    "Completed",
    "Failed",
    "Canceled",
    "NotResponding",
    "Paused",
    "Unknown",
)
"""The ``JobStatus`` values of the Microsoft.MachineLearningServices REST specification."""

DEFAULT_JOB_PROGRESSION = ("NotStarted", "Starting", "Preparing", "Queued", "Running", "Finalizing")
"""What a job walks through before its outcome, one status per poll, unless scripted."""

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
    lost_reply: Literal["reset", "timeout"] | None = None
    """Set for "the service acted but the reply was lost": the request is answered first."""
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
    def lost(
        cls,
        method: str | None,
        url_pattern: str,
        *,
        times: int | None,
        kind: Literal["reset", "timeout"],
    ) -> Fault:
        """A fault that lets the request through, then loses the reply (reset or timeout)."""
        if kind not in ("reset", "timeout"):
            raise ValueError(f"kind={kind!r}: use 'reset' or 'timeout'")
        return cls(
            method=method.upper() if method else None,
            pattern=re.compile(url_pattern),
            status=0,
            times=times,
            retry_after=None,
            connection_reset=False,
            reply=Reply(status=0),
            lost_reply=kind,
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
            statuses = [*DEFAULT_JOB_PROGRESSION, outcome]
        unknown = [s for s in [*statuses, outcome] if s not in JOB_STATUSES]
        if unknown:
            raise ValueError(
                f"statuses: {unknown[0]!r} is not an Azure ML job status; use one of "
                f"{', '.join(JOB_STATUSES)}"
            )
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
    cancel_polls: int = 0
    """Polls left that answer ``CancelRequested`` before a cancelled job reads ``Canceled``."""
    hold: Hold | None = None
    """While this hold is active the job stays where it is."""
    waiting: Callable[[], bool] | None = None
    """While this answers true, a job about to run stays ``Queued`` (quota short)."""
    created: int = 0
    """Creation order (the job list answers newest first)."""
    node: str = "chat_completion_pipeline"
    """Name of the pipeline-component node whose children are the steps."""
    on_completed: Callable[[], None] | None = None
    """Runs once, when the job reaches ``Completed`` (a fine-tuning job registers its model)."""

    @property
    def status(self) -> str:
        if self.canceled:
            return "CancelRequested" if self.cancel_polls > 0 else "Canceled"
        return self.script.statuses[min(self.position, len(self.script.statuses) - 1)]

    def request_cancel(self, polls: int) -> None:
        """Cancel the job: ``polls`` answers of ``CancelRequested``, then ``Canceled``."""
        if self.status in _ENDED:
            return
        self.canceled = True
        self.cancel_polls = max(0, polls)

    def advance(self) -> str:
        """The status this poll reports; the job then moves one step along its script."""
        if self.canceled:
            status = self.status
            if self.cancel_polls > 0 and not self._held():
                self.cancel_polls -= 1
            return status
        if self._held():
            return self.status
        nxt = self.script.statuses[min(self.position + 1, len(self.script.statuses) - 1)]
        if (
            self.waiting is not None
            and self.status in _BEFORE_RUNNING
            and nxt not in _BEFORE_RUNNING
            and self.waiting()
        ):
            return "Queued"
        status = self.status
        if self.position < len(self.script.statuses) - 1:
            self.position += 1
        self.notify_completed()
        return status

    def notify_completed(self) -> None:
        """Run ``on_completed`` (once) if the job has reached ``Completed``."""
        if self.on_completed is not None and self.status == "Completed":
            done, self.on_completed = self.on_completed, None
            done()

    def _held(self) -> bool:
        return self.hold is not None and self.hold.active


_ENDED = frozenset({"Completed", "Failed", "Canceled"})
_BEFORE_RUNNING = frozenset({"NotStarted", "Starting", "Provisioning", "Preparing", "Queued"})


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


@attrs.define(eq=False)
class Hold:
    """Keeps matching operations (and jobs) in progress until :meth:`release`.

    Returned by ``FakeAzureML.hold``; a context manager that releases on exit.
    """

    method: str | None
    pattern: re.Pattern[str]
    active: bool = True
    caught: list[str] = attrs.field(factory=list)
    """``"METHOD url"`` of every request whose operation this hold caught."""

    def matches(self, method: str, url: str) -> bool:
        if not self.active or (self.method is not None and self.method != method):
            return False
        return self.pattern.search(url) is not None

    def release(self) -> None:
        """Let the held operations finish at their next poll."""
        self.active = False

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
    resource: str | None = None
    """The resource this operation changes (``onlineEndpoints/x``); busy until it is done."""
    action: str = "Updating"
    """What the operation does to the resource (``Creating``, ``Deleting``, ...)."""
    hold: Hold | None = None

    def abandon(self) -> None:
        """End the operation on its next poll (the service went away while it ran)."""
        if self.hold is not None:
            self.hold.release()
        if not self.done and self.seen < self.polls:
            self.polls = self.seen
            self.final = "Canceled"

    def advance(self) -> bool:
        """One poll's worth of progress; returns whether the operation is now finished."""
        if self.done:
            return True
        if self.hold is not None and self.hold.active:
            return False
        if self.seen < self.polls:
            self.seen += 1
            return False
        self.done = True
        if self.on_done is not None:
            self.on_done()
        return True

    def poll(self) -> dict[str, Any]:
        """The operation-status body of this poll (``InProgress`` until it finishes)."""
        if not self.advance():
            return {"id": self.op_id, "name": self.op_id, "status": "InProgress"}
        body: dict[str, Any] = {"id": self.op_id, "name": self.op_id, "status": self.final}
        if self.error is not None:
            body["error"] = self.error
        return body
