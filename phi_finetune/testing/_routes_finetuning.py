"""Fine-tuning jobs (``jobType: FineTuning``): the serverless ("models as a service") route.

The SDK submits them with ``PUT .../jobs/{name}?api-version=2024-10-01-preview`` and reads them
back at 2024-01-01-preview, then again at 2024-10-01-preview (azure-ai-ml 1.35.2
``JobOperations._get_job``); they share the job store, lifecycle and routes of pipeline jobs
(``_routes_jobs``), which hands a FineTuning PUT to :func:`finetuning_put`. Shapes: the
``FineTuningJob``, ``FineTuningVertical`` and ``CustomModelFineTuning`` definitions of mfe.json
2024-01-01-preview and 2024-10-01-preview (vendored in ``tests/data/contract/``).

On completion the service registers the output model in the workspace under
``outputs.registered_model.assetName`` (what the SDK's ``output_model_name_prefix`` becomes)
as version 1, so ``ml_client.models.get(name, "1")`` works as in the azureml-examples
notebook.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._maas_catalog import deploy_regions
from phi_finetune.testing._routes_registry import created_system_data
from phi_finetune.testing._state import JobScript, JobState

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore

__all__ = [
    "FINETUNING_TASK_TYPES",
    "SERVERLESS_HYPERPARAMETERS",
    "finetuning_put",
    "is_finetuning",
    "job_view",
]

FINETUNING_TASK_TYPES = (
    "ChatCompletion",
    "TextCompletion",
    "TextClassification",
    "QuestionAnswering",
    "TextSummarization",
    "TokenClassification",
    "TextTranslation",
    "ImageClassification",
    "ImageInstanceSegmentation",
    "ImageObjectDetection",
    "VideoMultiObjectTracking",
)
"""``FineTuningTaskType`` of mfe.json 2024-01-01-preview / 2024-10-01-preview."""

SERVERLESS_HYPERPARAMETERS = (
    "learning_rate",
    "max_seq_length",
    "num_train_epochs",
    "per_device_train_batch_size",
)
"""What the serverless route accepts (issue 14, from the azureml-assets
``oss_chat_completion_pipeline`` spec); the managed-compute route passes any through."""

_REGISTRY_MODEL = re.compile(
    r"^azureml://registries/(?P<reg>[^/]+)/models/(?P<name>[^/]+)(?:/versions/(?P<ver>[^/]+))?$",
    re.IGNORECASE,
)
_WORKSPACE_MODEL = re.compile(
    r"^(?:azureml:)?(?P<name>[^:/]+):(?P<ver>[^:/]+)$|"
    r"^azureml://locations/[^/]+/workspaces/[^/]+/models/(?P<wname>[^/]+)/versions/(?P<wver>[^/]+)$",
    re.IGNORECASE,
)
# keys of a FineTuningJob that 2024-01-01-preview does not define (added by 2024-10-01-preview)
_ABSENT_AT = {"2024-01-01-preview": ("resources", "queueSettings")}


def is_finetuning(sent: Any) -> bool:
    """Whether a job PUT body asks for a fine-tuning job."""
    props = sent.get("properties") if isinstance(sent, dict) else None
    return isinstance(props, dict) and str(props.get("jobType", "")).lower() == "finetuning"


def job_view(body: dict[str, Any], req: FakeRequest) -> dict[str, Any]:
    """A job body as the api-version of ``req`` defines it (fine-tuning keys left out at
    versions that do not have them); other jobs unchanged."""
    props = body.get("properties") or {}
    absent = _ABSENT_AT.get(req.query.get("api-version", ""), ())
    if props.get("jobType") != "FineTuning" or not any(k in props for k in absent):
        return body
    return {**body, "properties": {k: v for k, v in props.items() if k not in absent}}


def _bad(message: str, target: str, *, code: str = "UserError") -> Reply:
    return azure_error(
        400,
        code,
        message,
        target=target,
        details=[{"code": "InvalidRequestContent", "message": message, "target": target}],
    )


def _check_input(value: Any, where: str, *, kind: str | None = None) -> Reply | None:
    if not isinstance(value, dict):
        return _bad(f"{where} is required: a job input with 'jobInputType' and 'uri'.", where)
    if not str(value.get("uri") or "").strip():
        return _bad(f"{where}.uri is required (an azureml:// or https:// URI).", f"{where}.uri")
    sent = str(value.get("jobInputType") or "")
    allowed = (kind,) if kind else ("uri_file", "uri_folder", "mltable")
    if sent not in allowed:
        return _bad(
            f"{where}.jobInputType {sent!r} is not valid here; use {' or '.join(allowed)}.",
            f"{where}.jobInputType",
        )
    return None


def _base_model(store: FakeStore, uri: str) -> tuple[dict[str, Any] | None, Reply | None]:
    """The registry (or workspace) model a job's ``model.uri`` names, or the 400 refusing it."""
    where = "properties.fineTuningDetails.model.uri"
    found = _REGISTRY_MODEL.match(uri)
    if found is not None:
        versions = store.registry_versions("models", found["reg"], found["name"])
        if found["ver"]:
            versions = [v for v in versions if str(v.get("name")) == found["ver"]]
        if versions:
            return versions[0], None
        return None, _bad(
            f"Model {uri!r} was not found: registry {found['reg']!r} has no model "
            f"{found['name']!r}{' version ' + found['ver'] if found['ver'] else ''}. "
            "Check the model id in the model catalog.",
            where,
        )
    workspace = _WORKSPACE_MODEL.match(uri)
    if workspace is not None:
        name = workspace["name"] or workspace["wname"]
        version = workspace["ver"] or workspace["wver"]
        body = store.get_asset("models", name, version)
        if body is not None:
            return body, None
        return None, _bad(
            f"Model {name}:{version} was not found in workspace {store.scope.workspace_name!r}.",
            where,
        )
    return None, _bad(
        f"Model {uri!r} is not a model id: use azureml://registries/<registry>/models/<name>"
        "/versions/<version> or a workspace model.",
        where,
    )


def _check_serverless(
    store: FakeStore, model: dict[str, Any], uri: str, hyper: dict[str, Any]
) -> Reply | None:
    """The service's checks for a job without compute (serverless fine-tuning)."""
    if store.serverless_needs_hub and store.scope.workspace_kind.lower() != "project":
        return _bad(
            f"Workspace {store.scope.workspace_name!r} is not a hub-based project (kind "
            f"{store.scope.workspace_kind!r}); serverless fine-tuning needs a project in an "
            "Azure AI hub. Create the job in a project, or pass compute/instance_types to "
            "fine-tune on managed compute.",
            "properties.computeId",
            code="ServerlessFineTuningNotSupported",
        )
    regions = deploy_regions(model)
    if regions is None:
        return _bad(
            f"Model {uri!r} does not support serverless fine-tuning (no "
            "'maas-finetuning-deploy-regions'); fine-tune it on managed compute instead.",
            "properties.fineTuningDetails.model.uri",
            code="ServerlessFineTuningNotSupported",
        )
    location = store.scope.location.lower()
    if location not in [r.lower() for r in regions]:
        return _bad(
            f"Serverless fine-tuning of {uri!r} is not available in region {location!r}; "
            f"it is available in {', '.join(regions)}.",
            "properties.fineTuningDetails.model.uri",
            code="ServerlessFineTuningNotSupported",
        )
    unknown = sorted(k for k in hyper if k not in SERVERLESS_HYPERPARAMETERS)
    if unknown:
        return _bad(
            f"Hyperparameter(s) {', '.join(unknown)} are not accepted by serverless "
            f"fine-tuning; use {', '.join(SERVERLESS_HYPERPARAMETERS)}.",
            f"properties.fineTuningDetails.hyperParameters.{unknown[0]}",
        )
    return None


def _details(sent_details: dict[str, Any], task: str) -> dict[str, Any]:
    details = copy.deepcopy(sent_details)
    details["taskType"] = task
    for key in ("model", "trainingData", "validationData"):
        if isinstance(details.get(key), dict):
            details[key].setdefault("mode", "ReadOnlyMount")
    details.setdefault("hyperParameters", {})
    return details


def _registered_name(outputs: dict[str, Any], job_name: str) -> str:
    out = outputs.get("registered_model")
    name = out.get("assetName") if isinstance(out, dict) else None
    return str(name) if name else f"{job_name}-registered-model"


def _validate(store: FakeStore, props: dict[str, Any]) -> tuple[dict[str, Any], str, Reply | None]:
    """``(fineTuningDetails, normalised task type, problem)`` of a FineTuning PUT."""
    details = props.get("fineTuningDetails")
    if not isinstance(details, dict):
        return (
            {},
            "",
            _bad(
                "properties.fineTuningDetails is required for a FineTuning job.",
                "properties.fineTuningDetails",
            ),
        )
    if str(details.get("modelProvider") or "") != "Custom":
        return (
            {},
            "",
            _bad(
                f"modelProvider {details.get('modelProvider')!r} is not served; use 'Custom'.",
                "properties.fineTuningDetails.modelProvider",
            ),
        )
    task = next(
        (t for t in FINETUNING_TASK_TYPES if t.lower() == str(details.get("taskType")).lower()),
        None,
    )
    if task is None:
        return (
            {},
            "",
            _bad(
                f"taskType {details.get('taskType')!r} is not valid; use one of "
                f"{', '.join(FINETUNING_TASK_TYPES)}.",
                "properties.fineTuningDetails.taskType",
            ),
        )
    for key, kind in (("model", "mlflow_model"), ("trainingData", None)):
        problem = _check_input(details.get(key), f"properties.fineTuningDetails.{key}", kind=kind)
        if problem is not None:
            return {}, "", problem
    if details.get("validationData") is not None:
        problem = _check_input(
            details["validationData"], "properties.fineTuningDetails.validationData"
        )
        if problem is not None:
            return {}, "", problem
    hyper = details.get("hyperParameters") or {}
    if not isinstance(hyper, dict):
        return (
            {},
            "",
            _bad(
                "hyperParameters must be an object of string values.",
                "properties.fineTuningDetails.hyperParameters",
            ),
        )
    for key, value in hyper.items():
        if not isinstance(value, str):
            return (
                {},
                "",
                _bad(
                    f"Hyperparameter {key!r} is {value!r} ({type(value).__name__}); hyperparameter "
                    f'values are strings, e.g. "{value}".',
                    f"properties.fineTuningDetails.hyperParameters.{key}",
                ),
            )
    outputs = props.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return (
            {},
            "",
            _bad(
                "properties.outputs is required for a FineTuning job (the 'registered_model' "
                "output names the model to register).",
                "properties.outputs",
            ),
        )
    return details, task, None


def _register_output(store: FakeStore, job: JobState) -> None:
    """Register the job's output model (version 1, or the next one) in the workspace."""
    outputs = job.body["properties"].get("outputs") or {}
    name = _registered_name(outputs, job.name)
    version = store.next_asset_version("models", name)
    details = job.body["properties"]["fineTuningDetails"]
    body = {
        "id": store.scope.arm_id(f"/models/{name}/versions/{version}"),
        "name": version,
        "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
        "systemData": created_system_data(store),
        "properties": {
            "description": f"Fine-tuned by job {job.name}.",
            "tags": {},
            "properties": {"baseModelId": str(details["model"]["uri"])},
            "isArchived": False,
            "isAnonymous": False,
            "flavors": {},
            "jobName": job.name,
            "modelType": "mlflow_model",
            "modelUri": f"azureml://jobs/{job.name}/outputs/registered_model",
            "provisioningState": "Succeeded",
        },
    }
    store.put_asset("models", name, version, body)


def finetuning_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    """Create a FineTuning job (the job route checked the workspace already)."""
    name = m["name"]
    sent = req.json if isinstance(req.json, dict) else {}
    props = sent["properties"]
    existing = store.get_job(name)
    if existing is not None:
        for key in ("displayName", "description", "tags"):
            if key in props:
                existing.body["properties"][key] = props[key]
        existing.body["properties"]["status"] = existing.status
        return Reply(json=job_view(existing.body, req))
    details, task, problem = _validate(store, props)
    if problem is not None:
        return problem
    model, problem = _base_model(store, str(details["model"]["uri"]))
    if problem is not None or model is None:
        return problem or _bad("base model not found", "properties.fineTuningDetails.model")
    compute = props.get("computeId")
    instance_types = (props.get("resources") or {}).get("instanceTypes") or []
    if compute:
        compute_name = str(compute).rstrip("/").split("/")[-1].removeprefix("azureml:")
        if store.get_compute(compute_name) is None:
            return _bad(
                f"Compute {compute_name!r} was not found in workspace "
                f"{store.scope.workspace_name!r}.",
                "properties.computeId",
            )
    elif not instance_types:
        problem = _check_serverless(
            store, model, str(details["model"]["uri"]), details.get("hyperParameters") or {}
        )
        if problem is not None:
            return problem
    body = copy.deepcopy(sent)
    body["id"] = f"{store.scope.workspace_id}/jobs/{name}"
    body["name"] = name
    body["type"] = "Microsoft.MachineLearningServices/workspaces/jobs"
    body["systemData"] = created_system_data(store)
    out = body["properties"]
    out["fineTuningDetails"] = _details(details, task)
    out.setdefault("experimentName", "Default")
    out.setdefault("isArchived", False)
    out.setdefault("tags", {})
    out.setdefault("properties", {})
    for output in out["outputs"].values():
        if isinstance(output, dict):
            output.setdefault("mode", "ReadWriteMount")
    if "resources" in out and not isinstance(out["resources"], dict):
        out.pop("resources")
    out["services"] = {
        "Studio": {"jobServiceType": "Studio", "endpoint": store.scope.studio_url(name)},
        "Tracking": {"jobServiceType": "Tracking", "endpoint": store.scope.tracking_uri},
    }
    job = JobState(
        name=name,
        body=body,
        script=store.take_job_script(name) or JobScript.build(),
        created=store.next_id(),
        node="finetuning",
        hold=store.hold_for(req.method, req.url),
    )
    job.on_completed = lambda: _register_output(store, job)
    store.put_job(job)
    out["status"] = job.status
    return Reply(status=201, json=job_view(body, req))
