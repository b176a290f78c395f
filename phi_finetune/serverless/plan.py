"""The serverless backend's plan: every check before anything billable is created.

Offline (config, pinned facts of :mod:`phi_finetune.serverless.facts`) or online (the model's
registry tags, the workspace's region and kind): the model offers serverless fine-tuning, the
workspace's region is in the model's list, the workspace is a hub-based project, only the
accepted hyperparameters with valid values, training and validation data present. Each failure
raises its own error class (:mod:`phi_finetune.serverless.errors`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.config.checks import CoercionError, coerce
from phi_finetune.errors import ConfigurationError
from phi_finetune.serverless.errors import (
    NotHubWorkspaceError,
    ServerlessDataError,
    ServerlessHyperparameterError,
    ServerlessNotSupportedError,
    UnsupportedRegionError,
)
from phi_finetune.serverless.facts import (
    ACCEPTED_HYPERPARAMETERS,
    HYPERPARAMETER_SOURCE,
    IDLE_DELETE_DAYS,
    REGIONS_TAG,
    serverless_facts,
)
from phi_finetune.steps import PlannedCompute, PlannedModel, PlanParameter, PlanRecord, plan_table

if TYPE_CHECKING:
    from phi_finetune.config import RunConfig
    from phi_finetune.steps import PreparedDataRecord

__all__ = [
    "ModelFacts",
    "WorkspaceFacts",
    "check_hyperparameters",
    "cost_line",
    "plan_serverless",
    "serverless_names",
]


_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@attrs.frozen
class WorkspaceFacts:
    """What a plan needs to know of the workspace (read online, or given in ``[serverless]``)."""

    location: str | None
    kind: str | None
    """``project`` (hub-based), ``hub`` or ``default``; ``None``: unknown."""
    hub_id: str | None = None
    workspace_id: str | None = None
    """The workspace's GUID (part of the fine-tuned model's id)."""

    @classmethod
    def read(cls, ml_client: Any) -> WorkspaceFacts:
        """The facts of ``ml_client``'s workspace (one GET)."""
        from phi_finetune.azure.boundary import call

        name = ml_client.workspace_name
        entity = call(f"read workspace {name!r}", lambda: ml_client.workspaces.get(name))
        hub = getattr(entity, "_hub_id", None) or getattr(entity, "hub_id", None)
        kind = getattr(entity, "_kind", None) or getattr(entity, "kind", None)
        return cls(
            location=_text(getattr(entity, "location", None)),
            kind="project" if hub else _text(kind),
            hub_id=_text(hub),
            workspace_id=_text(getattr(entity, "_workspace_id", None)),
        )


@attrs.frozen
class ModelFacts:
    """The base model as the registry (or the pinned facts) describe it."""

    name: str
    version: str | None
    id: str | None
    regions: tuple[str, ...] | None
    """Regions of a fine-tuned serverless deployment; ``None``: no serverless fine-tuning."""
    needs_subscription: bool
    source: str

    @classmethod
    def pinned(cls, name: str) -> ModelFacts:
        facts = serverless_facts(name)
        if facts is None:
            return cls(name, None, None, None, False, "pinned facts (model not listed)")
        s = facts.source
        return cls(
            facts.name,
            None,
            None,
            facts.regions,
            facts.needs_marketplace_subscription,
            f"{s['repo']}/{s['path']} @ {s['commit'][:10]}",
        )

    @classmethod
    def from_registry(cls, model: Any, registry: str) -> ModelFacts:
        """Facts of a registry model entity: its tags list the regions."""
        tags = dict(getattr(model, "tags", None) or {})
        raw = tags.get(REGIONS_TAG)
        regions = None if raw is None else _regions(raw)
        name = str(model.name)
        pinned = serverless_facts(name)
        publisher = str(tags.get("author") or tags.get("publisher") or "")
        needs = (
            pinned.needs_marketplace_subscription
            if pinned is not None
            else bool(publisher) and publisher.lower() != "microsoft"
        )
        return cls(
            name,
            str(model.version),
            str(model.id) if getattr(model, "id", None) else None,
            regions,
            needs,
            f"registry {registry} (tag {REGIONS_TAG})",
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(getattr(value, "value", value)).strip()
    return text.lower() if text else None


def _regions(raw: Any) -> tuple[str, ...]:
    """A region list tag: the registry serves a list as its Python-literal text
    (``"['eastus2', 'eastus']"``); a comma-separated string is read too."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    cleaned = (str(r).strip().strip("[]").strip().strip("'\"").strip().lower() for r in items)
    return tuple(r for r in cleaned if r)


def serverless_names(config: RunConfig, run_id: str, model_name: str) -> dict[str, str]:
    """The deterministic names of the run's job, fine-tuned model and endpoint."""
    from phi_finetune.names import derive_endpoint_name, sanitize_model_name

    # Output names allow only letters, digits, '-' and '_' (azure-ai-ml's Output check).
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", sanitize_model_name(model_name))
    s = config.serverless
    prefix = s.output_model_prefix
    if prefix is not None and not _OUTPUT_NAME.match(prefix):
        raise ConfigurationError(
            f"serverless.output_model_prefix = {prefix!r}: a fine-tuned model name may hold only "
            "letters, digits, '-' and '_' (at most 200 characters); change it or leave it out",
            key="serverless.output_model_prefix",
        )
    return {
        "job_name": f"phift-{run_id}".replace(".", "-").lower(),
        "output_model_name": prefix or f"{base}-ft-{run_id}".lower(),
        "endpoint_name": s.endpoint_name or derive_endpoint_name(f"{base}-ft", run_id),
    }


def check_hyperparameters(config: RunConfig) -> dict[str, PlanParameter]:
    """The job's hyperparameters (``[finetune] parameters`` then ``[serverless]
    hyperparameters``), each checked; :class:`ServerlessHyperparameterError` for the first bad
    one."""
    given: dict[str, tuple[Any, str]] = {}
    for section, values in (
        ("finetune.parameters", config.finetune.parameters),
        ("serverless.hyperparameters", config.serverless.hyperparameters),
    ):
        for name, value in values.items():
            given[name] = (value, section)
    accepted = ", ".join(ACCEPTED_HYPERPARAMETERS)
    source = f"{HYPERPARAMETER_SOURCE['repo']}/{HYPERPARAMETER_SOURCE['path']}"
    out: dict[str, PlanParameter] = {}
    for name, (value, section) in sorted(given.items()):
        key = f"{section}.{name}"
        if name not in ACCEPTED_HYPERPARAMETERS:
            raise ServerlessHyperparameterError(
                f"{key}: the serverless route does not accept hyperparameter {name!r}; it "
                f"accepts only {accepted} (per {source}). Remove it, or use backend = 'azure' "
                "for the full pipeline's parameters",
                key=key,
            )
        kind, _ = ACCEPTED_HYPERPARAMETERS[name]
        try:
            number = coerce(value, "integer" if kind == "integer" else "number", mode="text")
        except CoercionError:
            raise ServerlessHyperparameterError(
                f"{key} = {value!r}: expected {'an integer' if kind == 'integer' else 'a number'}"
                f"; set it to e.g. {ACCEPTED_HYPERPARAMETERS[name][1]!r}",
                key=key,
            ) from None
        problem = _range_problem(name, number)
        if problem:
            raise ServerlessHyperparameterError(f"{key} = {value!r}: {problem}", key=key)
        out[name] = PlanParameter(number, "user", kind)
    for name, (kind, default) in ACCEPTED_HYPERPARAMETERS.items():
        out.setdefault(name, PlanParameter(default, "component default", kind))
    return dict(sorted(out.items()))


def _range_problem(name: str, value: float) -> str | None:
    if not math.isfinite(value):
        return "must be a finite number"
    if name == "learning_rate":
        return None if 0 < value <= 1 else "must be > 0 and <= 1 (e.g. 0.0002)"
    if name == "max_seq_length":
        return None if 1 <= value <= 131072 else "must be between 1 and 131072 tokens"
    return None if value >= 1 else "must be >= 1"


def cost_line(endpoint_name: str) -> str:
    """What the deployment costs while it exists."""
    return (
        f"serverless endpoint {endpoint_name} bills per hour while it exists, used or not "
        f"(teardown deletes it); Azure deletes a fine-tuned serverless deployment after "
        f"{IDLE_DELETE_DAYS} days without calls"
    )


def plan_serverless(
    config: RunConfig,
    prepared: PreparedDataRecord | None,
    *,
    run_id: str,
    model: ModelFacts | None = None,
    workspace: WorkspaceFacts | None = None,
) -> PlanRecord:
    """The checked plan. ``model``/``workspace`` ``None``: offline (pinned facts and the
    ``[serverless]`` keys ``region`` and ``workspace_kind``; what they do not give is not
    checked, with a warning). ``prepared`` ``None``: the data is checked when a run prepares
    it (``phi-finetune plan`` prepares nothing)."""
    s = config.serverless
    warnings: list[str] = []
    online = model is not None
    facts = model or ModelFacts.pinned(s.model)
    if facts.regions is None:
        raise ServerlessNotSupportedError(
            f"serverless.model = {s.model!r}: the model offers no serverless fine-tuning "
            f"({facts.source} lists no regions for it). Pick a model that does (e.g. "
            "'Phi-4-mini-instruct'), or use backend = 'azure' to fine-tune on your own GPU quota"
        )
    ws = workspace or WorkspaceFacts(location=s.region, kind=s.workspace_kind)
    where = "the workspace" if workspace is not None else "serverless.region"
    if ws.location is None:
        warnings.append(
            "the workspace's region is not known offline: set serverless.region to check it"
        )
    elif ws.location not in facts.regions:
        message = (
            f"{where} = {ws.location!r}: {facts.name} fine-tuned serverless deployments are "
            f"supported only in {', '.join(facts.regions)} (per {facts.source}). Use a "
            "hub-based project in one of those regions, or set serverless.check_region = "
            "false if you know better"
        )
        if s.check_region:
            raise UnsupportedRegionError(message, key="serverless.region")
        warnings.append(message)
    kind_where = "the workspace" if workspace is not None else "serverless.workspace_kind"
    if ws.kind is None:
        warnings.append(
            "the workspace's kind is not known offline: set serverless.workspace_kind to check "
            "that it is a hub-based project"
        )
    elif ws.kind != "project":
        raise NotHubWorkspaceError(
            f"{kind_where} is a {ws.kind!r} workspace: serverless fine-tuning needs a "
            "hub-based project (kind 'project' with a hub). Create a project under an Azure "
            "AI hub and point [workspace] workspace_name at it, or use backend = 'azure'",
            key="serverless.workspace_kind" if workspace is None else "workspace.workspace_name",
        )
    if prepared is not None:
        _check_data(prepared)
    else:
        warnings.append("data not checked: a run checks train and validation data first")
    parameters = check_hyperparameters(config)
    names = serverless_names(config, run_id, facts.name)
    subscribe = (
        s.marketplace_subscription
        if s.marketplace_subscription is not None
        else facts.needs_subscription
    )
    compute = None
    if s.compute or s.instance_types:
        compute = PlannedCompute(
            name=s.compute or "instance_types",
            vm_size=s.instance_types[0] if s.instance_types else None,
        )
    cost = cost_line(names["endpoint_name"])
    rows = [
        ("backend", "serverless (models as a service)"),
        ("model", f"{facts.name}:{facts.version or 'latest'} ({facts.source})"),
        ("regions", ", ".join(facts.regions)),
        ("workspace region", ws.location or "unknown (offline)"),
        ("workspace kind", ws.kind or "unknown (offline)"),
        ("job", names["job_name"]),
        ("fine-tuned model", names["output_model_name"]),
        ("endpoint", names["endpoint_name"] if config.deploy.enabled else "(deploy disabled)"),
        ("marketplace", "subscribe" if subscribe else "no subscription needed"),
        ("training", _training_where(s.compute, s.instance_types, s.job_tier)),
        ("cost", cost),
    ]
    return PlanRecord(
        model=PlannedModel(name=facts.name, version=facts.version, id=facts.id),
        parameters=parameters,
        display_name=names["job_name"],
        table=plan_table(rows, parameters, warnings),
        compute=compute,
        experiment_name=config.effective_experiment_name,
        warnings=tuple(warnings),
        details={
            "serverless": {
                **names,
                "online": online,
                "regions": list(facts.regions),
                "location": ws.location,
                "workspace_kind": ws.kind,
                "workspace_id": ws.workspace_id,
                "marketplace_subscription": bool(subscribe),
                "job_tier": s.job_tier,
                "instance_types": list(s.instance_types),
                "compute": s.compute,
            },
            "cost": cost,
        },
    )


def plan_from_config(config: RunConfig, *, workspace: Any = None) -> PlanRecord:
    """``phi-finetune plan`` for the serverless backend: offline without ``workspace`` (a
    :class:`~phi_finetune.azure.workspace.Workspace`), else with the model's tags and the
    workspace's facts. Names are shown for a placeholder run id."""
    model = facts = None
    if workspace is not None:
        model, facts = online_facts(config, workspace)
    return plan_serverless(config, None, run_id="RUN_ID", model=model, workspace=facts)


def online_facts(config: RunConfig, ws: Any) -> tuple[ModelFacts, WorkspaceFacts]:
    """The model's serverless facts from its registry tags, and the workspace's facts."""
    from phi_finetune.azure.boundary import call

    registry = config.model.registry
    client = ws.registry_client_for(registry)
    name = config.serverless.model
    selector = config.model.selector if config.model.name == name else {"label": "latest"}
    entity = call(
        f"get model {name!r} from registry {registry!r}",
        lambda: client.models.get(name, **selector),
    )
    return ModelFacts.from_registry(entity, registry), WorkspaceFacts.read(ws.ml_client)


def _training_where(compute: str | None, instance_types: Any, tier: str | None) -> str:
    if compute:
        return f"managed compute {compute} (your quota)"
    if instance_types:
        return f"managed compute {', '.join(instance_types)} (your quota)"
    return f"serverless capacity (no GPU quota needed){f', tier {tier}' if tier else ''}"


def _check_data(prepared: PreparedDataRecord) -> None:
    from phi_finetune.errors import DataProblem

    for role in ("train", "validation"):
        path = prepared.files.get(role)
        count = prepared.counts.get(role)
        if path is None or count == 0:
            what = "missing" if path is None else f"empty ({path})"
            raise ServerlessDataError(
                f"the {role} data is {what}: the serverless job needs both training and "
                "validation data",
                problems=[
                    DataProblem(
                        source=str(path or prepared.out_dir),
                        line=None,
                        field=None,
                        message=f"no {role} rows",
                        fix="give more rows ([data] rows or split_pc) or set [data] validation_pc",
                        code="missing-split",
                    )
                ],
            )


def parameters_for_job(parameters: Mapping[str, PlanParameter]) -> dict[str, str]:
    """The SDK's ``hyperparameters``: strings (``Dict[str, str]``), user-set ones only."""
    return {n: _as_text(p.value) for n, p in parameters.items() if p.source == "user"}


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return str(value)
