"""Pipeline jobs: ARM create/get/list/cancel, run-history details/children, and log files."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import WS, not_found, paged, route
from phi_finetune.testing._routes_finetuning import finetuning_put, is_finetuning, job_view
from phi_finetune.testing._routes_registry import created_system_data
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
"""Steps of the registry pipeline component: children of the job's one pipeline node, so
grandchildren of the submitted job (``jobs.list(parent_job_name=<node run id>)``)."""

_ENDED = ("Completed", "Failed", "Canceled")

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


def _quota_short(store: FakeStore, computes: list[str]) -> bool:
    """Whether a cluster the job uses lacks the vCPU quota for one more node (job: Queued)."""
    for name in computes:
        compute = store.get_compute(name)
        if compute is None:
            continue
        size = store.find_vm_size(str(compute["properties"]["properties"].get("vmSize", "")))
        usage = None if size is None else _family_usage(store, str(size["family"]))
        if size is None or usage is None or int(usage["limit"]) < 0:
            continue
        if int(usage["limit"]) - int(usage["currentValue"]) < int(size["vCPUs"]):
            return True
    return False


def _squash(text: Any) -> str:
    return re.sub(r"[\s_]", "", str(text or "")).lower()


def _family_usage(store: FakeStore, family: str) -> dict[str, Any] | None:
    """The dedicated usage entry of a VM family, however its name is spelled."""
    key = _squash(family).removesuffix("family")
    for usage in store.list_usages():
        name = usage.get("name") or {}
        for spelled in (_squash(name.get("value")), _squash(name.get("localizedValue"))):
            if spelled.startswith(key) and "lowpriority" not in spelled:
                return usage
    return None


def _pipeline_node(props: dict[str, Any]) -> str:
    nodes = props.get("jobs")
    if isinstance(nodes, dict) and nodes:
        return str(next(iter(nodes)))
    return "chat_completion_pipeline"


def _job_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    sent = req.json if isinstance(req.json, dict) else {}
    props = sent.get("properties")
    if not isinstance(props, dict):
        return azure_error(400, "UserError", "The request body has no 'properties'.")
    if is_finetuning(sent):
        return finetuning_put(store, req, m)
    existing = store.get_job(name)
    if existing is not None:
        for key in ("displayName", "description", "tags"):
            if key in props:
                existing.body["properties"][key] = props[key]
        return Reply(json=_refresh(existing))
    computes = [c for c in _computes_referenced(props) if c != "serverless"]
    for compute in computes:
        if store.get_compute(compute) is None:
            return azure_error(
                400,
                "UserError",
                f"Compute {compute!r} was not found in workspace {store.scope.workspace_name!r}.",
            )
    body = copy.deepcopy(sent)
    body["id"] = f"{store.scope.workspace_id}/jobs/{name}"
    body["name"] = name
    body["type"] = "Microsoft.MachineLearningServices/workspaces/jobs"
    body["systemData"] = created_system_data(store)
    body["properties"].setdefault("experimentName", "Default")
    body["properties"]["services"] = {
        "Studio": {"jobServiceType": "Studio", "endpoint": store.scope.studio_url(name)},
        "Tracking": {
            "jobServiceType": "Tracking",
            "endpoint": store.scope.tracking_uri,
        },
    }
    script = store.take_job_script(name) or JobScript.build()
    job = JobState(
        name=name,
        body=body,
        script=script,
        created=store.next_id(),
        node=_pipeline_node(props),
        hold=store.hold_for(req.method, req.url),
        waiting=lambda: _quota_short(store, computes),
    )
    store.put_job(job)
    store.add_child_run(_node_run_id(job), name, None)
    for step in _steps(job):
        store.add_child_run(_step_run_id(job, step), name, step)
    return Reply(status=201, json=_refresh(job))


def _node_run_id(job: JobState) -> str:
    return f"{job.name}_{job.node}"


def _step_run_id(job: JobState, step: str) -> str:
    return f"{job.name}_{step}"


def _steps(job: JobState) -> list[str]:
    steps = list(PIPELINE_STEPS)
    failing = job.script.failing_step
    if job.script.outcome == "Failed" and failing is not None and failing not in steps:
        steps.append(failing)
    return steps


def _child_arm_body(store: FakeStore, job: JobState, step: str | None) -> dict[str, Any]:
    """What ARM answers for a child run: a pipeline node, or a command step."""
    run_id = _node_run_id(job) if step is None else _step_run_id(job, step)
    status = _child_status(job, step)
    props: dict[str, Any] = {
        "displayName": job.node if step is None else step,
        "experimentName": job.body["properties"].get("experimentName", "Default"),
        "status": status,
        "isArchived": False,
        "tags": {},
        "properties": {},
    }
    if step is None:
        props.update({"jobType": "Pipeline", "jobs": {}, "inputs": {}, "outputs": {}})
    else:
        props.update(
            {
                "jobType": "Command",
                "command": f"python -m azureml.acft.{step}",
                "environmentId": "azureml://registries/azureml/environments/acft-hf-nlp-gpu"
                "/versions/1",
                "computeId": job.body["properties"].get("computeId"),
            }
        )
    return {
        "id": f"{store.scope.workspace_id}/jobs/{run_id}",
        "name": run_id,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": props,
        "systemData": dict(job.body["systemData"]),
    }


def _job_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["name"])
    if job is None:
        child = store.child_run(m["name"])
        if child is None:
            return not_found("Job", m["name"])
        return Reply(json=_child_arm_body(store, *child))
    status = job.advance()
    return Reply(json=job_view(_refresh(job, status), req))


def _job_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    return paged(store, req, [job_view(_refresh(j), req) for j in store.list_jobs()])


def _job_cancel(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    job = store.get_job(m["name"])
    if job is None:
        return not_found("Job", m["name"])
    # The cancel operation ends when the request is accepted; the job itself reads
    # CancelRequested for ``cancel_polls`` more polls, then Canceled.
    job.request_cancel(store.cancel_polls)
    return lro_accepted(store, 202, None)


def _failure_error(message: str, target: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "UserError",
            "message": message,
            "messageFormat": message,
            "details": [],
            "target": target,
        },
        "time": "2026-01-01T00:10:00.000000+00:00",
        "componentName": target,
    }


def _error(job: JobState, step: str | None = None, *, root: bool = True) -> dict[str, Any] | None:
    """The run-history error of a failed run: the step's own, or the pipeline's summary."""
    if job.status != "Failed":
        return None
    failing = job.script.failing_step or "chat_completion_finetune"
    if not root and step is not None:
        if step != failing:
            return None
        message = job.script.error_message or "Execution failed."
        return _failure_error(message, step)
    path = f"/{failing}" if not root else f"/{job.node}"
    message = (
        f"Pipeline has failed child jobs. Failed nodes: {path}. For more details and logs, "
        "please go to the job detail page and check the child jobs."
    )
    return _failure_error(message, job.node if root else failing)


def _child_status(job: JobState, step: str | None) -> str:
    """A child's status, derived from where the root job is (the service drives it that way)."""
    root = job.status
    if step is None:
        return "Running" if root in ("Finalizing",) else root
    steps = _steps(job)
    index = steps.index(step)
    if root == "Completed" or root == "Finalizing":
        return "Completed"
    if root == "Failed":
        failing = steps.index(job.script.failing_step or "chat_completion_finetune")
        return "Completed" if index < failing else ("Failed" if index == failing else "Canceled")
    if root in ("Canceled", "CancelRequested"):
        return root if index == 0 else "Canceled"
    if root == "Running":
        return "Running" if index == 0 else "NotStarted"
    return "NotStarted"


def _log_url(store: FakeStore, run: str, path: str) -> str:
    root = store.scope.blob_account_url
    return f"{root}/azureml/ExperimentRun/dcid.{run}/{path}?sv=2026-01-01&sig=fake"


def _run_body(
    store: FakeStore, job: JobState, step: str | None = None, *, root: bool = True
) -> dict[str, Any]:
    props = job.body["properties"]
    if root:
        run_id, parent, status, name = job.name, None, job.status, props.get("displayName")
        run_type, error = "azureml.PipelineRun", _error(job)
    else:
        run_id = _node_run_id(job) if step is None else _step_run_id(job, step)
        parent = job.name if step is None else _node_run_id(job)
        status, name = _child_status(job, step), (job.node if step is None else step)
        run_type = "azureml.PipelineRun" if step is None else "azureml.StepRun"
        error = _error(job, step, root=False) if status == "Failed" else None
    body: dict[str, Any] = {
        "runId": run_id,
        "runUuid": f"00000000-0000-0000-0000-{store.next_id():012d}",
        "parentRunId": parent,
        "rootRunId": job.name,
        "displayName": name or run_id,
        "name": name or run_id,
        "experimentId": "00000000-0000-0000-0000-0000000000ff",
        "status": status,
        "runType": run_type,
        "target": _compute_name(props.get("computeId")),
        "properties": {"azureml.runsource": run_type},
        "tags": dict(props.get("tags") or {}) if root else {},
        "error": error,
        "createdUtc": "2026-01-01T00:00:00.000000+00:00",
        "startTimeUtc": "2026-01-01T00:00:00.000000+00:00",
    }
    if not root:
        kind = "PipelineStep" if step is None else "CommandStep"
        body["properties"].update({"azureml.nodeid": run_id[-8:], "StepType": kind})
    return body


def _resolve(store: FakeStore, run: str) -> tuple[JobState, str | None, bool] | None:
    """``(root job, step, is_root)`` of a run id: the job itself, its node, or a step."""
    job = store.get_job(run)
    if job is not None:
        return job, None, True
    child = store.child_run(run)
    if child is None:
        return None
    return child[0], child[1], False


def _run_details(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    found = _resolve(store, m["run"])
    if found is None:
        return not_found("Run", m["run"])
    job, step, root = found
    if root:
        status = job.advance()
        body = _run_body(store, job)
        body["status"] = status
        if status != "Failed":
            body["error"] = None
    else:
        body = _run_body(store, job, step, root=False)
    body.update(
        {
            "warnings": [],
            "logFiles": {_PIPELINE_LOG: _log_url(store, m["run"], _PIPELINE_LOG)},
            "runDefinition": {},
            "services": {},
        }
    )
    return Reply(json=body)


def _run_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    found = _resolve(store, m["run"])
    if found is None:
        return not_found("Run", m["run"])
    job, step, root = found
    return Reply(json=_run_body(store, job, step, root=root))


def _children(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    found = _resolve(store, m["run"])
    if found is None:
        return not_found("Run", m["run"])
    job, step, root = found
    if root:
        children = [_run_body(store, job, None, root=False)]
    elif step is None:
        children = [_run_body(store, job, s, root=False) for s in _steps(job)]
    else:
        children = []
    return Reply(json={"value": children, "nextLink": None})


def _log(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    found = _resolve(store, m["run"])
    if found is None:
        return azure_error(404, "BlobNotFound", "The specified blob does not exist.")
    job = found[0]
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
