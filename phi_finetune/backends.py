"""The contract a backend (Azure ML or local) fulfils for a
:class:`~phi_finetune.session.FineTuneSession`.

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

__all__ = [
    "STEPS",
    "Backend",
    "StepContext",
    "load_configured_dataset",
    "prepare_data_files",
    "sample_scoring_request",
]

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


def prepare_data_files(ctx: StepContext) -> tuple[Any, dict[str, Any]]:
    """Step 7 for every backend: validate, sample, split and write the files.

    Returns the ``PreparedData`` and the step's JSON outputs.
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
    outputs: dict[str, Any] = {
        "out_dir": str(prepared.out_dir),
        "files": {role: str(path) for role, path in prepared.files().items()},
        "counts": dict(prepared.counts),
        "sha256": dict(prepared.sha256),
        "manifest": str(prepared.manifest),
        "validation": {
            "errors": prepared.report.errors,
            "warnings": prepared.report.warnings,
            "rows_invalid": prepared.report.rows_invalid,
        },
    }
    return prepared, outputs


def sample_scoring_request(
    prepare_outputs: Mapping[str, Any], *, seed: int, parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Step 15's request: one seeded-random row of ``test_gen`` (else ``test``), its trailing
    assistant turn dropped so the model answers the last user turn."""
    import random

    import orjson

    from phi_finetune.data import scoring_request_from_row
    from phi_finetune.errors import DataValidationError

    files = prepare_outputs.get("files", {})
    path = files.get("test_gen") or files.get("test") or files.get("train")
    if not path:
        raise DataValidationError("no prepared split to take a scoring sample from")
    with Path(path).open("rb") as handle:
        lines = [line for line in handle if line.strip()]
    if not lines:
        raise DataValidationError(f"{path} is empty: no scoring sample to take")
    index = random.Random(seed).randrange(len(lines))
    row = orjson.loads(lines[index])
    return scoring_request_from_row(row, parameters, source=f"{path}:{index + 1}")
