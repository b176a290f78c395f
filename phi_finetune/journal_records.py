"""The journal's value objects: a step, a resource, a run summary (:mod:`phi_finetune.journal`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

__all__ = [
    "ResourceKind",
    "ResourceRecord",
    "ResourceState",
    "RunSummary",
    "StepRecord",
    "StepStatus",
]

StepStatus = Literal["pending", "running", "completed", "failed"]
ResourceKind = Literal[
    "data_asset",
    "compute",
    "job",
    "model",
    "endpoint",
    "deployment",
    "local_server",
    "local_model",
    "marketplace_subscription",
]
ResourceState = Literal["creating", "created", "deleted"]


@attrs.frozen
class StepRecord:
    """One workflow step as the journal last saw it."""

    name: str
    status: StepStatus
    inputs: Mapping[str, Any] = attrs.field(factory=dict)
    outputs: Mapping[str, Any] = attrs.field(factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "attempts": self.attempts,
        }


@attrs.frozen
class ResourceRecord:
    """A resource a run created or reused."""

    kind: str
    name: str
    version: str | None = None
    created_by_run: bool = True
    billable: bool = False
    state: ResourceState = "created"
    details: Mapping[str, Any] = attrs.field(factory=dict)
    """Non-secret facts such as ``scoring_uri``, ``deployment`` or a local server's ``pid``."""
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def alive(self) -> bool:
        """Whether the resource may still exist (not recorded as deleted)."""
        return self.state != "deleted"

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.kind, self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "created_by_run": self.created_by_run,
            "billable": self.billable,
            "state": self.state,
            "details": dict(self.details),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@attrs.frozen
class RunSummary:
    """One line of :func:`list_runs`: a run and what it still holds."""

    run_id: str
    backend: str
    status: str
    created_at: str
    updated_at: str
    last_completed_step: str | None
    alive_resources: tuple[ResourceRecord, ...]
    path: Path
    error: str | None = None
    """Why the journal could not be read (the other fields are then placeholders)."""

    @property
    def billable_alive(self) -> tuple[ResourceRecord, ...]:
        """Billable resources the run created and has not recorded as deleted."""
        return tuple(r for r in self.alive_resources if r.billable and r.created_by_run)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "backend": self.backend,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_completed_step": self.last_completed_step,
            "alive_resources": [r.to_dict() for r in self.alive_resources],
            "billable_alive": len(self.billable_alive),
            "path": str(self.path),
            "error": self.error,
        }


def step_from(raw: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        name=str(raw["name"]),
        status=raw["status"],
        inputs=dict(raw.get("inputs") or {}),
        outputs=dict(raw.get("outputs") or {}),
        started_at=raw.get("started_at"),
        finished_at=raw.get("finished_at"),
        error=raw.get("error"),
        attempts=int(raw.get("attempts", 0)),
    )


def resource_from(raw: Mapping[str, Any]) -> ResourceRecord:
    return ResourceRecord(
        kind=str(raw["kind"]),
        name=str(raw["name"]),
        version=raw.get("version"),
        created_by_run=bool(raw.get("created_by_run", True)),
        billable=bool(raw.get("billable", False)),
        state=raw["state"],
        details=dict(raw.get("details") or {}),
        created_at=raw.get("created_at"),
        updated_at=raw.get("updated_at"),
    )
