"""Typed records of what each workflow step produced.

Each record is a frozen attrs class with ``to_dict()`` (what the journal stores) and
``from_dict()`` (what a resumed run reads back). ``from_dict`` checks every field and raises a
:class:`~phi_finetune.errors.RunStateError` naming the step and the field, never a raw
``KeyError``/``TypeError``. Keys it does not know are ignored, so a journal can carry extra
facts (such as a step's ``seconds``).

- ``prepare_data``: :class:`PreparedDataRecord` (files, counts, sha256, manifest, validation,
  assets)
- ``plan``: :class:`PlanRecord` (pinned model, component, compute, parameters; ``str()`` is the
  plan table)
- ``fine_tune``: :class:`JobRecord` (name, status, studio_url, trained_model, training)
- ``register``: :class:`ModelRef` (name, version, uri)
- ``deploy``: :class:`DeploymentRecord` (endpoint_name, deployment_name, scoring_uri)
- ``score``: :class:`ScoreRecord` (request, request_file, reply)
- ``teardown``: :class:`TeardownRecord` (deleted)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import attrs

from phi_finetune._step_reader import reader
from phi_finetune.errors import RunStateError

__all__ = [
    "RECORD_TYPES",
    "STEPS",
    "DeploymentRecord",
    "JobRecord",
    "ModelRef",
    "PlanParameter",
    "PlanRecord",
    "PlannedCompute",
    "PlannedModel",
    "PreparedDataRecord",
    "ScoreRecord",
    "StepRecordType",
    "TeardownRecord",
    "TrainingSummary",
    "ValidationSummary",
    "plan_table",
    "record_from_dict",
]

#: The workflow's steps, in order.
STEPS = ("prepare_data", "plan", "fine_tune", "register", "deploy", "score", "teardown")


class StepRecordType(Protocol):
    """What every step record offers."""

    STEP: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------- prepare_data


@attrs.frozen(kw_only=True)
class ValidationSummary:
    """Counts of what data validation found."""

    errors: int = 0
    warnings: int = 0
    rows_invalid: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"errors": self.errors, "warnings": self.warnings, "rows_invalid": self.rows_invalid}


@attrs.frozen(kw_only=True)
class PreparedDataRecord:
    """``prepare_data``: the files written (by role), their row counts and hashes, the manifest,
    the validation summary and, on Azure, the registered data assets' input paths."""

    STEP: ClassVar[str] = "prepare_data"

    out_dir: str
    files: Mapping[str, str]
    """Path of each written file by role (``train``, ``validation``, ``test``, ``test_gen``)."""
    counts: Mapping[str, int] = attrs.field(factory=dict)
    sha256: Mapping[str, str] = attrs.field(factory=dict)
    manifest: str | None = None
    validation: ValidationSummary = attrs.field(factory=ValidationSummary)
    assets: Mapping[str, str] = attrs.field(factory=dict)
    """Pipeline input name -> ``azureml:`` data asset path (empty when nothing was registered)."""

    @property
    def scoring_file(self) -> str | None:
        """The split scoring samples come from: ``test_gen``, else ``test``, else ``train``."""
        return self.files.get("test_gen") or self.files.get("test") or self.files.get("train")

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "files": dict(self.files),
            "counts": dict(self.counts),
            "sha256": dict(self.sha256),
            "manifest": self.manifest,
            "validation": self.validation.to_dict(),
            "assets": dict(self.assets),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> PreparedDataRecord:
        r = reader(cls, data, source)
        v = r.sub("validation", optional=True)
        return cls(
            out_dir=r.text("out_dir"),
            files=r.str_map("files"),
            counts=r.int_map("counts"),
            sha256=r.str_map("sha256"),
            manifest=r.opt_str("manifest"),
            validation=ValidationSummary(
                errors=v.opt_int("errors") or 0,
                warnings=v.opt_int("warnings") or 0,
                rows_invalid=v.opt_int("rows_invalid") or 0,
            )
            if v
            else ValidationSummary(),
            assets=r.str_map("assets"),
        )


# ---------------------------------------------------------------------------------- plan


@attrs.frozen(kw_only=True)
class PlannedModel:
    """The base model a plan pinned (a resumed ``fine_tune`` uses exactly this version)."""

    name: str
    version: str | None = None
    id: str | None = None
    inference_allow_list: tuple[str, ...] | None = None
    test_model: bool = False
    """Local backend: the offline tiny test model (not a real language model)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "id": self.id,
            "inference_allow_list": (
                None if self.inference_allow_list is None else list(self.inference_allow_list)
            ),
            "test_model": self.test_model,
        }


@attrs.frozen(kw_only=True)
class PlannedCompute:
    """Where the job runs."""

    name: str
    vm_size: str | None = None
    gpus_per_node: int = 1
    nodes: int = 1
    will_create: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vm_size": self.vm_size,
            "gpus_per_node": self.gpus_per_node,
            "nodes": self.nodes,
            "will_create": self.will_create,
        }


@attrs.frozen
class PlanParameter:
    """One fine-tuning parameter's value and where it came from (``user``, ``model default``,
    ``reference default``, ``component default``)."""

    value: Any
    source: str
    type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "type": self.type}


@attrs.frozen(kw_only=True)
class PlanRecord:
    """``plan``: what ``fine_tune`` will submit. ``str(plan)`` is the plan table."""

    STEP: ClassVar[str] = "plan"

    model: PlannedModel
    parameters: Mapping[str, PlanParameter]
    display_name: str
    table: str = attrs.field(repr=False)
    component_id: str | None = None
    component_version: str | None = None
    """The component version resolved at plan time (``label="latest"`` is not resolved again)."""
    compute: PlannedCompute | None = None
    experiment_name: str | None = None
    warnings: tuple[str, ...] = ()
    ignored_on_local: Mapping[str, str] = attrs.field(factory=dict)
    """Local backend: Azure-only parameters it ignores, with the reason."""
    details: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    """Backend details (Azure: data inputs, tags, pipeline YAML, interface changes, ...)."""

    @property
    def parameter_values(self) -> dict[str, Any]:
        """Every parameter's value by name."""
        return {name: p.value for name, p in self.parameters.items()}

    def __str__(self) -> str:
        return self.table

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "component_id": self.component_id,
            "component_version": self.component_version,
            "compute": None if self.compute is None else self.compute.to_dict(),
            "parameters": {name: p.to_dict() for name, p in self.parameters.items()},
            "display_name": self.display_name,
            "experiment_name": self.experiment_name,
            "warnings": list(self.warnings),
            "ignored_on_local": dict(self.ignored_on_local),
            "table": self.table,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> PlanRecord:
        r = reader(cls, data, source)
        m = r.required_sub("model")
        c = r.sub("compute", optional=True)
        parameters: dict[str, PlanParameter] = {}
        for name in r.mapping("parameters"):
            p = r.required_sub("parameters").required_sub(name)
            if "value" not in p.data:
                p.fail("value", "is missing")
            parameters[name] = PlanParameter(p.data["value"], p.text("source"), p.opt_str("type"))
        return cls(
            model=PlannedModel(
                name=m.text("name"),
                version=m.opt_str("version"),
                id=m.opt_str("id"),
                inference_allow_list=m.opt_str_list("inference_allow_list"),
                test_model=m.flag("test_model"),
            ),
            component_id=r.opt_str("component_id"),
            component_version=r.opt_str("component_version"),
            compute=None
            if c is None
            else PlannedCompute(
                name=c.text("name"),
                vm_size=c.opt_str("vm_size"),
                gpus_per_node=c.opt_int("gpus_per_node") or 1,
                nodes=c.opt_int("nodes") or 1,
                will_create=c.flag("will_create"),
            ),
            parameters=parameters,
            display_name=r.text("display_name"),
            experiment_name=r.opt_str("experiment_name"),
            warnings=r.str_list("warnings"),
            ignored_on_local=r.str_map("ignored_on_local"),
            table=r.text("table"),
            details=dict(r.mapping("details")),
        )


# ---------------------------------------------------------------------------------- fine_tune


@attrs.frozen(kw_only=True)
class TrainingSummary:
    """Local backend: what the training run produced and measured."""

    base_model: str
    merged_dir: str
    adapter_dir: str | None = None
    final_loss: float | None = None
    eval_loss: float | None = None
    steps: int | None = None
    tokens_trained: int | None = None
    duration_s: float | None = None
    device: str | None = None
    mlflow_run_id: str | None = None
    history: tuple[Mapping[str, Any], ...] = attrs.field(default=(), repr=False)
    """Logged metrics per step (``{"step": 1, "loss": 2.3, ...}``)."""
    ignored: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "merged_dir": self.merged_dir,
            "adapter_dir": self.adapter_dir,
            "final_loss": self.final_loss,
            "eval_loss": self.eval_loss,
            "steps": self.steps,
            "tokens_trained": self.tokens_trained,
            "duration_s": self.duration_s,
            "device": self.device,
            "mlflow_run_id": self.mlflow_run_id,
            "history": [dict(h) for h in self.history],
            "ignored": dict(self.ignored),
        }


@attrs.frozen(kw_only=True)
class JobRecord:
    """``fine_tune``: the finished fine-tuning job."""

    STEP: ClassVar[str] = "fine_tune"

    name: str
    status: str
    studio_url: str | None = None
    trained_model: str | None = None
    """Azure: the job's ``trained_model`` output path (``azureml://jobs/<name>/outputs/...``)."""
    training: TrainingSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "studio_url": self.studio_url,
            "trained_model": self.trained_model,
            "training": None if self.training is None else self.training.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> JobRecord:
        r = reader(cls, data, source)
        t = r.sub("training", optional=True)
        training = None
        if t is not None:
            history = t.items("history")
            for index, item in enumerate(history):
                if not isinstance(item, Mapping):
                    t.fail(f"history[{index}]", f"is a {type(item).__name__}, not an object")
            training = TrainingSummary(
                base_model=t.text("base_model"),
                merged_dir=t.text("merged_dir"),
                adapter_dir=t.opt_str("adapter_dir"),
                final_loss=t.opt_number("final_loss"),
                eval_loss=t.opt_number("eval_loss"),
                steps=t.opt_int("steps"),
                tokens_trained=t.opt_int("tokens_trained"),
                duration_s=t.opt_number("duration_s"),
                device=t.opt_str("device"),
                mlflow_run_id=t.opt_str("mlflow_run_id"),
                history=tuple(dict(h) for h in history),
                ignored=t.str_map("ignored"),
            )
        return cls(
            name=r.text("name"),
            status=r.text("status"),
            studio_url=r.opt_str("studio_url"),
            trained_model=r.opt_str("trained_model"),
            training=training,
        )


# ---------------------------------------------------------------------------------- register


@attrs.frozen(kw_only=True)
class ModelRef:
    """``register``: a registered model version, the same shape on every backend.

    ``uri`` is what a deployment takes: ``azureml:<name>:<version>`` on Azure,
    ``models:/<name>/<version>`` in the local MLflow registry. ``str(model)`` is
    ``<name>:<version>``.
    """

    STEP: ClassVar[str] = "register"

    name: str
    version: str
    uri: str
    id: str | None = None
    """Azure: the model version's resource id."""
    tracking_uri: str | None = None
    """Local: the MLflow store holding the registry."""
    alias: str | None = None
    """Local: the registry alias pointing at this version."""
    created: bool | None = attrs.field(default=None, eq=False)
    """Whether this run registered it (``False``: an earlier registration was reused)."""

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "id": self.id,
            "tracking_uri": self.tracking_uri,
            "alias": self.alias,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> ModelRef:
        r = reader(cls, data, source)
        created = r.data.get("created")
        return cls(
            name=r.text("name"),
            version=r.version("version"),
            uri=r.text("uri"),
            id=r.opt_str("id"),
            tracking_uri=r.opt_str("tracking_uri"),
            alias=r.opt_str("alias"),
            created=None if created is None else r.flag("created"),
        )


# ---------------------------------------------------------------------------------- deploy


@attrs.frozen(kw_only=True)
class DeploymentRecord:
    """``deploy``: the endpoint and its deployment."""

    STEP: ClassVar[str] = "deploy"

    endpoint_name: str
    deployment_name: str | None
    scoring_uri: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint_name": self.endpoint_name,
            "deployment_name": self.deployment_name,
            "scoring_uri": self.scoring_uri,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> DeploymentRecord:
        r = reader(cls, data, source)
        return cls(
            endpoint_name=r.text("endpoint_name"),
            deployment_name=r.opt_str("deployment_name"),
            scoring_uri=r.text("scoring_uri"),
        )


# ---------------------------------------------------------------------------------- score


@attrs.frozen(kw_only=True)
class ScoreRecord:
    """``score``: the request sent (also written to ``request_file``) and the reply's text."""

    STEP: ClassVar[str] = "score"

    request: Mapping[str, Any] = attrs.field(repr=False)
    request_file: str
    reply: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": dict(self.request),
            "request_file": self.request_file,
            "reply": self.reply,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> ScoreRecord:
        r = reader(cls, data, source)
        return cls(
            request=dict(r.mapping("request", optional=False)),
            request_file=r.text("request_file"),
            reply=r.opt_str("reply"),
        )


# ---------------------------------------------------------------------------------- teardown


@attrs.frozen(kw_only=True)
class TeardownRecord:
    """``teardown``: the resources deleted, as ``kind:name``."""

    STEP: ClassVar[str] = "teardown"

    deleted: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> TeardownRecord:
        return cls(deleted=reader(cls, data, source).str_list("deleted"))


#: The record type of each step.
RECORD_TYPES: Mapping[str, Any] = {
    cls.STEP: cls
    for cls in (
        PreparedDataRecord,
        PlanRecord,
        JobRecord,
        ModelRef,
        DeploymentRecord,
        ScoreRecord,
        TeardownRecord,
    )
}


def record_from_dict(step: str, data: Any, *, source: str = "") -> Any:
    """The record of ``step`` read from its journaled dict."""
    cls = RECORD_TYPES.get(step)
    if cls is None:
        raise RunStateError(
            f"{source + ': ' if source else ''}unknown step {step!r}; "
            f"the steps are {', '.join(RECORD_TYPES)}"
        )
    return cls.from_dict(data, source=source)


def plan_table(
    rows: Sequence[tuple[str, str]],
    parameters: Mapping[str, PlanParameter],
    warnings: Sequence[str] = (),
) -> str:
    """A plan as plain text: ``rows`` (label, value), then every parameter with its source,
    then the warnings (the layout of the Azure plan table)."""
    width = max([len(k) for k, _ in rows] or [0])
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    params = [(n, repr(p.value), p.source) for n, p in sorted(parameters.items())]
    w1 = max([len("parameter")] + [len(p[0]) for p in params])
    w2 = max([len("value")] + [len(p[1]) for p in params])
    lines.append(f"{'parameter'.ljust(w1)}  {'value'.ljust(w2)}  source")
    lines.append(f"{'-' * w1}  {'-' * w2}  {'-' * 17}")
    lines += [f"{n.ljust(w1)}  {v.ljust(w2)}  {s}" for n, v, s in params]
    if warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
