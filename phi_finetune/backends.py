"""The contract a backend (Azure ML or local) fulfils for a
:class:`~phi_finetune.session.FineTuneSession`.

The session owns the order of steps, the journal and resume/teardown; a backend does the work of
each step and returns its typed record (:mod:`phi_finetune.steps`). Every resource it creates is
reported to :attr:`StepContext.observer` (a :class:`ResourceObserver`) as ``creating`` *before*
its create request (under its deterministic name, or the tag that finds it) and as ``created``
before it is waited on, so a lost reply or a kill never loses track of something billable.

A backend may also have ``reconcile(ctx)``: teardown calls it first to resolve resources
journaled as ``creating`` whose name the service chose (the Azure job, found by its run tag).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from phi_finetune.errors import RunStateError
from phi_finetune.observer import ResourceObserver  # re-exported: its home is observer.py
from phi_finetune.steps import (
    STEPS,
    DeploymentRecord,
    JobRecord,
    ModelRef,
    PlanRecord,
    PreparedDataRecord,
    ValidationSummary,
)

if TYPE_CHECKING:
    from phi_finetune.config import RunConfig
    from phi_finetune.data import PreparedData
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import Journal, ResourceRecord

__all__ = [
    "STEPS",
    "Backend",
    "JournalObserver",
    "ResourceObserver",
    "StepContext",
    "load_configured_dataset",
    "prepare_data_files",
    "sample_scoring_request",
]

_R = TypeVar("_R")


@attrs.define
class JournalObserver:
    """The :class:`ResourceObserver` that writes to a run's journal."""

    journal: Journal

    def creating(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.journal.record_resource(
            kind, name, version=version, billable=billable, state="creating", details=details
        )

    def created(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.journal.record_resource(
            kind, name, version=version, billable=billable, state="created", details=details
        )

    def deleted(self, kind: str, name: str, version: str | None = None) -> None:
        self.journal.mark_deleted(kind, name, version=version)
        if kind == "endpoint":  # an endpoint's deployments are deleted with it
            for deployment in self.journal.resources(kind="deployment", alive_only=True):
                self.journal.mark_deleted("deployment", deployment.name)


@attrs.define
class StepContext:
    """What a backend gets for each step: the configuration, the journal, the resource observer
    and the records of the steps completed so far (``prepared``, ``plan``, ``job``, ``model``,
    ``deployment``)."""

    config: RunConfig
    journal: Journal
    run_dir: Path
    records: Mapping[str, Any] = attrs.field(factory=dict)
    """The record of each completed step, by step name."""
    observer: ResourceObserver = attrs.field(
        default=attrs.Factory(lambda self: JournalObserver(self.journal), takes_self=True)
    )
    """Where the step reports the resources it creates (default: the run's journal)."""

    def _need(self, step: str, kind: type[_R]) -> _R:
        record = self.records.get(step)
        if not isinstance(record, kind):
            raise RunStateError(
                f"run {self.journal.run_id}: step {step!r} has not completed, so its result is "
                f"not available; run the steps in order (FineTuneSession does) or resume the run "
                f"with `phi-finetune resume {self.journal.run_id}`"
            )
        return record

    @property
    def prepared(self) -> PreparedDataRecord:
        """The ``prepare_data`` step's record."""
        return self._need("prepare_data", PreparedDataRecord)

    @property
    def plan(self) -> PlanRecord:
        """The ``plan`` step's record."""
        return self._need("plan", PlanRecord)

    @property
    def job(self) -> JobRecord:
        """The ``fine_tune`` step's record."""
        return self._need("fine_tune", JobRecord)

    @property
    def model(self) -> ModelRef:
        """The ``register`` step's record."""
        return self._need("register", ModelRef)

    @property
    def deployment(self) -> DeploymentRecord | None:
        """The ``deploy`` step's record, ``None`` before a deployment completed."""
        record = self.records.get("deploy")
        return record if isinstance(record, DeploymentRecord) else None

    def existing(self, kind: str) -> list[ResourceRecord]:
        """Resources of ``kind`` this run created that are not deleted yet."""
        return [r for r in self.journal.resources(alive_only=True) if r.kind == kind]


class Backend(Protocol):
    """One implementation of the workflow's steps (see :data:`STEPS`)."""

    name: str

    def prepare_data(self, ctx: StepContext) -> PreparedDataRecord: ...

    def plan(self, ctx: StepContext) -> PlanRecord: ...

    def fine_tune(self, ctx: StepContext) -> JobRecord: ...

    def register(self, ctx: StepContext) -> ModelRef: ...

    def deploy(self, ctx: StepContext) -> Endpoint: ...

    def endpoint(self, ctx: StepContext) -> Endpoint | None:
        """The deployed endpoint from the journal (reattached), or ``None`` when there is none."""
        ...

    def delete_resource(self, ctx: StepContext, resource: Any) -> None:
        """Delete one billable resource (idempotent: already gone is success)."""
        ...


def load_configured_dataset(config: RunConfig) -> Any:
    """The :class:`~phi_finetune.data.UltraChatDataset` that ``[data] source`` names.

    ``"demo"`` is the demo set shipped with the package; an existing path is read as files;
    anything else is a Hugging Face dataset id.
    """
    from phi_finetune.data import UltraChatDataset

    source = str(config.data.source)
    if source == "demo":
        return UltraChatDataset.demo()
    if Path(source).expanduser().exists():
        return UltraChatDataset.from_files(Path(source).expanduser())
    return UltraChatDataset.from_hub(source)


def prepare_data_files(ctx: StepContext) -> tuple[PreparedData, PreparedDataRecord]:
    """Step 7 for every backend: validate, sample, split and write the files.

    Returns the ``PreparedData`` and the step's record (no data assets yet).
    """
    data = ctx.config.data
    out_dir = Path(data.output_dir) if data.output_dir else ctx.run_dir / "data"
    prepared = load_configured_dataset(ctx.config).prepare(
        out_dir,
        split_pc=data.split_pc,
        sample=data.sample,
        seed=data.seed,
        rows=data.rows,
        validation_pc=data.validation_pc,
        on_invalid=data.on_invalid,
        max_tokens=data.max_tokens,
        scoring_parameters=ctx.config.score.parameters(),
    )
    record = PreparedDataRecord(
        out_dir=str(prepared.out_dir),
        files={role: str(path) for role, path in prepared.files().items()},
        counts={k: int(v) for k, v in prepared.counts.items()},
        sha256=dict(prepared.sha256),
        manifest=str(prepared.manifest),
        validation=ValidationSummary(
            errors=int(prepared.report.errors),
            warnings=int(prepared.report.warnings),
            rows_invalid=int(prepared.report.rows_invalid),
        ),
    )
    return prepared, record


def sample_scoring_request(
    prepared: PreparedDataRecord, *, seed: int, parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Step 15's request: one seeded-random row of ``test_gen`` (else ``test``), its trailing
    assistant turn dropped so the model answers the last user turn."""
    import random

    import orjson

    from phi_finetune.data import scoring_request_from_row
    from phi_finetune.errors import DataValidationError

    path = prepared.scoring_file
    if not path:
        raise DataValidationError("no prepared split to take a scoring sample from")
    with Path(path).open("rb") as handle:
        lines = [line for line in handle if line.strip()]
    if not lines:
        raise DataValidationError(f"{path} is empty: no scoring sample to take")
    index = random.Random(seed).randrange(len(lines))
    row = orjson.loads(lines[index])
    return scoring_request_from_row(row, parameters, source=f"{path}:{index + 1}")
