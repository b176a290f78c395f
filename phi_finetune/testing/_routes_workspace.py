"""Workspace, discovery, compute, VM sizes, usages and long-running operation status."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import ARM, WS, not_found, route, system_data

if TYPE_CHECKING:
    from phi_finetune.testing._scope import FakeScope
    from phi_finetune.testing._store import FakeStore

__all__ = [
    "ROUTES",
    "check_workspace",
    "compute_body",
    "conflict",
    "lro_accepted",
    "usage_body",
    "vm_size_body",
]

_LOC = ARM + r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.MachineLearningServices"
_LOC += r"/locations/(?P<loc>[^/]+)"


def check_workspace(store: FakeStore, m: re.Match[str]) -> Reply | None:
    """A 404 reply when the URL names another subscription, resource group or workspace."""
    scope = store.scope
    groups = m.groupdict()
    if (
        groups.get("sub", scope.subscription_id).lower() != scope.subscription_id.lower()
        or groups.get("rg", scope.resource_group).lower() != scope.resource_group.lower()
    ):
        return azure_error(
            404, "ResourceGroupNotFound", f"Resource group '{groups.get('rg')}' could not be found."
        )
    if groups.get("ws", scope.workspace_name).lower() != scope.workspace_name.lower():
        return azure_error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.MachineLearningServices/workspaces/{groups.get('ws')}' "
            f"under resource group '{groups.get('rg')}' was not found.",
        )
    return None


def lro_accepted(
    store: FakeStore,
    status: int,
    body: dict[str, Any] | None,
    *,
    on_done: Callable[[], None] | None = None,
    final: str = "Succeeded",
    error: dict[str, Any] | None = None,
    polls: int | None = None,
    resource: str | None = None,
    action: str = "Updating",
    async_operation: bool | None = None,
) -> Reply:
    """A long-running operation's first reply, with the headers the specification gives.

    200/201 (PUT): ``Azure-AsyncOperation`` and ``x-ms-async-operation-timeout``; 202 (DELETE,
    POST): ``Location`` and ``Retry-After``, plus ``Azure-AsyncOperation`` when
    ``async_operation`` is true (compute delete). ``resource`` is busy until the operation ends.
    """
    op_id, url = store.begin_operation(
        final=final, error=error, on_done=on_done, polls=polls, resource=resource, action=action
    )
    if async_operation is None:
        async_operation = status != 202
    headers: dict[str, str] = {}
    if async_operation:
        headers["Azure-AsyncOperation"] = url
    if status == 202:
        headers["Location"] = store.operation_url(op_id, result=True)
        headers["Retry-After"] = f"{store.retry_after_s:g}"
    else:
        headers["x-ms-async-operation-timeout"] = "PT1H"
    return Reply(status=status, json=body, headers=headers)


def conflict(store: FakeStore, resource: str) -> Reply | None:
    """409 Conflict while another operation on ``resource`` is still in progress."""
    operation = store.busy(resource)
    if operation is None:
        return None
    return azure_error(
        409,
        "Conflict",
        f"{resource} is {operation.action.lower()}: another operation on it is in progress "
        f"(operation {operation.op_id}). Wait for it to finish, then retry.",
        details=[{"code": "OperationInProgress", "message": f"{resource} is {operation.action}."}],
    )


def _workspace(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    return Reply(json=workspace_body(store.scope))


def workspace_body(scope: FakeScope) -> dict[str, Any]:
    rg_id = scope.resource_group_id
    return {
        "id": scope.workspace_id,
        "name": scope.workspace_name,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": scope.location,
        "kind": "Default",
        "tags": {},
        "identity": {
            "type": "SystemAssigned",
            "principalId": "00000000-0000-0000-0000-0000000000dd",
            "tenantId": "00000000-0000-0000-0000-0000000000aa",
        },
        "sku": {"name": "Basic", "tier": "Basic"},
        "properties": {
            "friendlyName": scope.workspace_name,
            "workspaceId": "00000000-0000-0000-0000-0000000000ee",
            "provisioningState": "Succeeded",
            "discoveryUrl": scope.discovery_url,
            "mlFlowTrackingUri": scope.tracking_uri,
            "storageAccount": (
                f"{rg_id}/providers/Microsoft.Storage/storageAccounts/{scope.storage_account}"
            ),
            "keyVault": f"{rg_id}/providers/Microsoft.KeyVault/vaults/fakekeyvault",
            "applicationInsights": f"{rg_id}/providers/Microsoft.insights/components/fakeappins",
            "hbiWorkspace": False,
            "publicNetworkAccess": "Enabled",
            "v1LegacyMode": False,
        },
        "systemData": system_data(),
    }


def _discovery(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    api = store.scope.api_url
    keys = (
        "api",
        "catalog",
        "experimentation",
        "gallery",
        "history",
        "hyperdrive",
        "labeling",
        "modelmanagement",
        "pipelines",
        "studiometadata",
    )
    return Reply(json=dict.fromkeys(keys, api))


def compute_body(
    scope: FakeScope,
    name: str,
    vm_size: str,
    *,
    state: str = "Succeeded",
    min_instances: int = 0,
    max_instances: int = 1,
    tier: str = "Dedicated",
    errors: list[dict[str, Any]] | None = None,
    idle_seconds: int = 120,
) -> dict[str, Any]:
    return {
        "id": scope.arm_id(f"/computes/{name}"),
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/computes",
        "location": scope.location,
        "tags": {},
        "properties": {
            "computeType": "AmlCompute",
            "computeLocation": scope.location,
            "provisioningState": state,
            "provisioningErrors": errors,
            "createdOn": "2026-01-01T00:00:00.000000+00:00",
            "modifiedOn": "2026-01-01T00:00:00.000000+00:00",
            "isAttachedCompute": False,
            "disableLocalAuth": True,
            "properties": {
                "vmSize": vm_size,
                "vmPriority": tier,
                "osType": "Linux",
                "scaleSettings": {
                    "maxNodeCount": max_instances,
                    "minNodeCount": min_instances,
                    "nodeIdleTimeBeforeScaleDown": f"PT{idle_seconds}S",
                },
                "remoteLoginPortPublicAccess": "Disabled",
                "enableNodePublicIp": True,
                "allocationState": "Steady",
                "allocationStateTransitionTime": "2026-01-01T00:00:00.000000+00:00",
                "currentNodeCount": min_instances,
                "targetNodeCount": min_instances,
                "nodeStateCounts": {
                    "idleNodeCount": min_instances,
                    "runningNodeCount": 0,
                    "preparingNodeCount": 0,
                    "unusableNodeCount": 0,
                    "leavingNodeCount": 0,
                    "preemptedNodeCount": 0,
                },
            },
        },
        "systemData": system_data(),
    }


def vm_size_body(name: str, vcpus: int, gpus: int, family: str, memory_gb: float) -> dict[str, Any]:
    return {
        "name": name,
        "family": family,
        "vCPUs": vcpus,
        "gpus": gpus,
        "osVhdSizeMB": 1047552,
        "maxResourceVolumeMB": 688128,
        "memoryGB": memory_gb,
        "lowPriorityCapable": True,
        "premiumIO": True,
        "supportedComputeTypes": ["Compute Instance", "AmlCompute"],
    }


def usage_body(scope: FakeScope, family: str, current: int, limit: int) -> dict[str, Any]:
    return {
        "id": scope.location_id(f"/usages/{family}"),
        "amlWorkspaceLocation": scope.location,
        "type": "Microsoft.MachineLearningServices/totalcores/usages",
        "unit": "Count",
        "currentValue": current,
        "limit": limit,
        "name": {"value": family, "localizedValue": f"{family} Cores"},
    }


def _compute_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    store.tick(f"computes/{m['name']}")
    body = store.get_compute(m["name"])
    if body is None:
        return not_found("Compute", m["name"])
    return Reply(json=body)


def _compute_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    return Reply(json={"value": store.list_computes()})


def _compute_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    busy = conflict(store, f"computes/{name}")
    if busy is not None:
        return busy
    sent = req.json if isinstance(req.json, dict) else {}
    props = sent.get("properties") or {}
    inner = props.get("properties") or {}
    scale = inner.get("scaleSettings") or {}
    vm_size = str(inner.get("vmSize") or "Standard_DS3_v2")
    if props.get("computeType", "AmlCompute") != "AmlCompute":
        return azure_error(400, "BadRequest", "FakeAzureML only serves AmlCompute clusters.")
    idle = str(scale.get("nodeIdleTimeBeforeScaleDown") or "PT120S")
    idle_match = re.fullmatch(r"PT(\d+)S", idle)
    body = compute_body(
        store.scope,
        name,
        vm_size,
        state="Creating",
        min_instances=int(scale.get("minNodeCount") or 0),
        max_instances=int(scale.get("maxNodeCount") or 1),
        tier=str(inner.get("vmPriority") or "Dedicated"),
        idle_seconds=int(idle_match.group(1)) if idle_match else 120,
    )
    if sent.get("tags"):
        body["tags"] = dict(sent["tags"])
    if props.get("description"):
        body["properties"]["description"] = props["description"]
    existed = store.put_compute(name, body)

    def done() -> None:
        body["properties"]["provisioningState"] = "Succeeded"

    return lro_accepted(
        store,
        200 if existed else 201,
        body,
        on_done=done,
        resource=f"computes/{name}",
        action="Updating" if existed else "Creating",
    )


def _compute_delete(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    body = store.get_compute(name)
    if body is None:
        return Reply(status=204)
    busy = conflict(store, f"computes/{name}")
    if busy is not None:
        return busy
    body["properties"]["provisioningState"] = "Deleting"
    return lro_accepted(
        store,
        202,
        None,
        on_done=lambda: store.delete_compute(name),
        resource=f"computes/{name}",
        action="Deleting",
        async_operation=True,
    )


def _sizes(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    return Reply(json={"value": store.list_vm_sizes()})


def _usages(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    return Reply(json={"value": store.list_usages()})


def _operation(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    op = store.get_operation(m["op"])
    if op is None:
        return not_found("Operation", m["op"])
    body = op.poll()
    if m["kind"].lower() != "mfeoperationresults":
        return Reply(json=body)
    # The Location URL answers by status code: 202 while running, then the outcome.
    if body["status"] == "InProgress":
        headers = {"Location": req.url, "Retry-After": f"{store.retry_after_s:g}"}
        return Reply(status=202, headers=headers)
    if body["status"] != "Succeeded":
        err = body.get("error") or {}
        return azure_error(
            400, str(err.get("code") or body["status"]), str(err.get("message") or body["status"])
        )
    return Reply(status=200, json=None)


_OPERATION = r"/(?P<kind>mfeOperationsStatus|mfeOperationResults)/(?P<op>[^/]+)"
ROUTES = [
    route("workspace.get", "GET", WS, _workspace),
    route("workspace.discovery", "GET", r"[a-z0-9-]+\.api\.azureml\.ms/discovery", _discovery),
    route("compute.list", "GET", WS + r"/computes", _compute_list),
    route("compute.get", "GET", WS + r"/computes/(?P<name>[^/]+)", _compute_get),
    route("compute.create", "PUT", WS + r"/computes/(?P<name>[^/]+)", _compute_put),
    route("compute.delete", "DELETE", WS + r"/computes/(?P<name>[^/]+)", _compute_delete),
    route("compute.list_sizes", "GET", _LOC + r"/vmSizes", _sizes),
    route("compute.list_usage", "GET", _LOC + r"/usages", _usages),
    route("operation.status", "GET", _LOC + _OPERATION, _operation),
]
