"""The contract a backend (Azure ML or local) fulfils for :class:`~phi_finetune.session.FineTuneSession`.

The session owns the order of steps, the journal and resume/teardown; a backend does the work of
each step and reports every resource it creates through :meth:`StepContext.created` *before*
waiting on it, so a crash never loses track of something billable.

Step outputs are plain JSON values: they are written to the journal and handed back to the
backend on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from phi_finetune.config import RunConfig
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import Journal

__all__ = ["STEPS", "Backend", "StepContext"]

#: The workflow's steps, in order.
STEPS = ("prepare_data", "plan", "fine_tune", "register", "deploy", "score", "teardown")


@attrs.define
class StepContext:
    """What a backend gets for each step: the configuration, the journal and earlier outputs."""

    config: RunConfig
    journal: Journal
    run_dir: Path
    outputs: Mapping[str, Mapping[str, Any]]
    """Outputs of the steps completed so far, by step name."""

    def created(
        self,
        kind: str,
        name: str,
        *,
        version: str | None = None,
        billable: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a resource this run created (call it before waiting on the resource)."""
        self.journal.record_resource(
            kind, name, version=version, billable=billable, details=dict(details or {})
        )

    def existing(self, kind: str) -> list[Any]:
        """Resources of ``kind`` this run created that are not deleted yet."""
        return [r for r in self.journal.resources(alive_only=True) if r.kind == kind]


class Backend(Protocol):
    """One implementation of the workflow's steps (see :data:`STEPS`)."""

    name: str

    def prepare_data(self, ctx: StepContext) -> dict[str, Any]: ...

    def plan(self, ctx: StepContext) -> dict[str, Any]: ...

    def fine_tune(self, ctx: StepContext) -> dict[str, Any]: ...

    def register(self, ctx: StepContext) -> dict[str, Any]: ...

    def deploy(self, ctx: StepContext) -> Endpoint: ...

    def endpoint(self, ctx: StepContext) -> Endpoint | None:
        """The deployed endpoint from the journal (reattached), or ``None`` when there is none."""
        ...

    def delete_resource(self, ctx: StepContext, resource: Any) -> None:
        """Delete one billable resource (idempotent: already gone is success)."""
        ...
