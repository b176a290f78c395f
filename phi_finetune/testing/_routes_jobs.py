"""Pipeline jobs: ARM create/get/list/cancel, run-history details/children, and log files."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import WS, not_found, route, system_data
from phi_finetune.testing._routes_workspace import check_workspace, lro_accepted
from phi_finetune.testing._state import JobScript, JobState

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore

__all__ = ["PIPELINE_STEPS", "ROUTES"]

PIPELINE_STEPS = (
    "ft_nlp_common_validation",
    "chat_completion_model_import",
    "chat_completion_datapreprocess",
    "chat_completion_finetune",
    "ft_nlp_model_converter",
)
"""Child steps reported for every pipeline job (``jobs.list(parent_job_name=...)``)."""

_HISTORY = (
    r"[a-z0-9-]+\.api\.azureml\.ms/history/v1\.0/subscriptions/(?P<sub>[^/]+)"
    r"/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.MachineLearningServices"
    r"/workspaces/(?P<ws>[^/]+)(?:/experiments/[^/]+|/experimentids/[^/]+)?/runs/(?P<run>[^/]+)"
)
_LOG_HOST = r"[a-z0-9]+\.blob\.core\.windows\.net/azureml/ExperimentRun/dcid\.(?P<run>[^/]+)/"
_PIPELINE_LOG = "logs/azureml/executionlogs.txt"


def _compute_name(compute_id: Any) -> str | None:
    if not isinstance(compute_id, str) or not compute_id:
        return None
    return compute_id.rstrip("/").split("/")[-1].removeprefix("azureml:")


def _computes_referenced(props: dict[str, Any]) -> list[str]:
    refs: list[Any] = [props.get("computeId")]
    settings = props.get("settings")
    if isinstance(settings, dict):
        refs.append(settings.get("default_compute"))
    nodes = props.get("jobs")
    if isinstance(nodes, dict):
        refs += [
            n.get("computeId") or n.get("compute") for n in nodes.values() if isinstance(n, dict)
        ]
    return [name for name in (_compute_name(ref) for ref in refs) if name]


def _refresh(job: JobState, status: str | None = None) -> dict[str, Any]:
    job.body["properties"]["status"] = status or job.status
    return job.body


def _job_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    sent = req.json if isinstance(req.json, dict) else {}
    props = sent.get("properties")
    if not isinstance(props, dict):
        return azure_error(400, "UserError", "The request body has no 'properties'.")
    existing = store.get_job(name)
    if existing is not None:
        for key in ("displayName", "description", "tags"):
            if key in props:
                existing.body["properties"][key] = props[key]
        return Reply(json=_refresh(existing))
    for compute in _computes_referenced(props):
        if compute != "serverless" and store.get_compute(compute) is None:
            return azure_error(
                400,
                "UserError",
                f"Compute {compute!r} was not found in workspace {store.scope.workspace_name!r}.",
            )
    body = copy.deepcopy(sent)
    body["id"] = f"{store.scope.workspace_id}/jobs/{name}"
    body["name"] = name
    body["type"] = "Microsoft.MachineLearningServices/workspaces/jobs"
    body["systemData"] = system_data()
    body["properties"].setdefault("experimentName", "Default")
    body["properties"]["services"] = {
        "Studio": {"jobServiceType": "Studio", "endpoint": store.scope.studio_url(name)},
        "Tracking": {
            "jobServiceType": "Tracking",
            "endpoint": store.scope.tracking_uri,
        },
    }
    script = store.take_job_script(name) or JobScript.build()
    job = JobState(name=name, body=body, script=script)
    store.put_job(job)
    return Reply(status=201, json=_refresh(job))


def _job_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["name"])
    if job is None:
        return not_found("Job", m["name"])
    status = job.advance()
    return Reply(json=_refresh(job, status))


def _job_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    return Reply(json={"value": [_refresh(j) for j in store.list_jobs()]})


def _job_cancel(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["name"])
    if job is None:
        return not_found("Job", m["name"])
    if job.status not in ("Completed", "Failed", "Canceled"):
        job.canceled = True
    return lro_accepted(store, 202, None)


def _error(job: JobState) -> dict[str, Any] | None:
    if job.status != "Failed":
        return None
    step = job.script.failing_step or "chat_completion_finetune"
    message = job.script.error_message or "Execution failed."
    return {
        "error": {
            "code": "UserError",
            "message": message,
            "messageFormat": message,
            "details": [{"code": "StepFailed", "message": f"Step {step!r} failed: {message}"}],
            "target": step,
        },
        "time": "2026-01-01T00:10:00.000000+00:00",
        "componentName": step,
    }


def _log_url(store: FakeStore, run: str, path: str) -> str:
    root = store.scope.blob_account_url
    return f"{root}/azureml/ExperimentRun/dcid.{run}/{path}?sv=2026-01-01&sig=fake"


def _run_body(store: FakeStore, job: JobState) -> dict[str, Any]:
    props = job.body["properties"]
    return {
        "runId": job.name,
        "runUuid": f"00000000-0000-0000-0000-{store.next_id():012d}",
        "rootRunId": job.name,
        "displayName": props.get("displayName") or job.name,
        "experimentId": "00000000-0000-0000-0000-0000000000ff",
        "status": job.status,
        "runType": "azureml.PipelineRun",
        "target": _compute_name(props.get("computeId")),
        "properties": {"azureml.runsource": "azureml.PipelineRun"},
        "tags": dict(props.get("tags") or {}),
        "error": _error(job),
        "createdUtc": "2026-01-01T00:00:00.000000+00:00",
        "startTimeUtc": "2026-01-01T00:00:00.000000+00:00",
    }


def _run_details(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["run"])
    if job is None:
        return not_found("Run", m["run"])
    status = job.advance()
    body = _run_body(store, job)
    body["status"] = status
    if status != "Failed":
        body["error"] = None
    body.update(
        {
            "warnings": [],
            "logFiles": {_PIPELINE_LOG: _log_url(store, job.name, _PIPELINE_LOG)},
            "runDefinition": {},
            "services": {},
        }
    )
    return Reply(json=body)


def _run_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["run"])
    if job is None:
        return not_found("Run", m["run"])
    return Reply(json=_run_body(store, job))


def _children(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["run"])
    if job is None:
        return not_found("Run", m["run"])
    failing = job.script.failing_step if job.status == "Failed" else None
    steps = list(PIPELINE_STEPS)
    if failing is not None and failing not in steps:
        steps.append(failing)
    children = []
    reached = False
    for index, step in enumerate(steps):
        if job.status == "Completed":
            status = "Completed"
        elif failing is not None:
            status = "Failed" if step == failing else ("Canceled" if reached else "Completed")
            reached = reached or step == failing
        elif job.status == "Canceled":
            status = "Canceled"
        else:
            status = "Running" if index == 0 else "NotStarted"
        child_error = None
        if status == "Failed":
            child_error = _error(job)
        children.append(
            {
                "runId": f"{job.name}_{step}",
                "parentRunId": job.name,
                "rootRunId": job.name,
                "displayName": step,
                "name": step,
                "status": status,
                "runType": "azureml.StepRun",
                "properties": {"azureml.nodeid": f"{index:08x}", "StepType": "CommandStep"},
                "tags": {},
                "error": child_error,
                "createdUtc": "2026-01-01T00:00:00.000000+00:00",
            }
        )
    return Reply(json={"value": children, "nextLink": None})


def _log(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    job = store.get_job(m["run"])
    if job is None:
        return azure_error(404, "BlobNotFound", "The specified blob does not exist.")
    text = "".join(f"{line}\n" for line in job.script.logs)
    if job.status in ("Completed", "Failed", "Canceled"):
        text += f"Run {job.name} finished with status {job.status}.\n"
    return Reply(body=text.encode(), headers={"content-type": "text/plain"})


ROUTES = [
    route("jobs.list", "GET", WS + r"/jobs", _job_list),
    route("jobs.get", "GET", WS + r"/jobs/(?P<name>[^/]+)", _job_get),
    route("jobs.create", "PUT", WS + r"/jobs/(?P<name>[^/]+)", _job_put),
    route("jobs.cancel", "POST", WS + r"/jobs/(?P<name>[^/]+)/cancel", _job_cancel),
    route("history.details", "GET", _HISTORY + r"/details", _run_details),
    route("history.children", "GET", _HISTORY + r"/children", _children),
    route("history.children", "POST", _HISTORY + r"/children", _children),
    route("history.run", "GET", _HISTORY, _run_get),
    route("jobs.log", "GET", _LOG_HOST + r"(?P<path>.+)", _log),
]
