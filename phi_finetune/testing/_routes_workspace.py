"""Workspace, discovery, compute, VM sizes, usages and long-running operation status."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import ARM, WS, not_found, route, system_data

if TYPE_CHECKING:
    from phi_finetune.testing._scope import FakeScope, UsageNaming
    from phi_finetune.testing._store import FakeStore

__all__ = [
    "LOW_PRIORITY_TOTAL",
    "REGIONAL_TOTAL",
    "ROUTES",
    "check_workspace",
    "compute_body",
    "conflict",
    "family_display_name",
    "lro_accepted",
    "put_family_usage",
    "put_regional_quota",
    "regional_usage_body",
    "usage_body",
    "vm_size_body",
]

REGIONAL_TOTAL = "Total Cluster Dedicated Regional vCPUs"
"""``name.value`` of the regional dedicated vCPU total (Usage/list.json, 2023-08-01-preview)."""
LOW_PRIORITY_TOTAL = "Total Cluster LowPriority Regional vCPUs"
_USAGE_TYPE = "Microsoft.MachineLearningServices/{}/usages"

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
        "kind": scope.workspace_kind,
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
            **({"hubResourceId": scope.hub_resource_id} if scope.hub_resource_id else {}),
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
                # The service answers sizes upper-cased (Compute/get/AmlCompute.json: STANDARD_NC6)
                "vmSize": vm_size.upper(),
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
        "supportedComputeTypes": ["AmlCompute", "ComputeInstance", "MIR"],
    }


def family_display_name(family: str, tier: str = "Dedicated") -> str:
    """``standardNCADSA100v4Family`` -> ``Standard NCADSA100v4 Family Cluster Dedicated vCPUs``."""
    core = re.sub(r"(?i)^standard[ _]?", "", family)
    core = re.sub(r"(?i)[ _]?family$", "", core)
    return f"Standard {core} Family Cluster {tier} vCPUs"


def _usage_entry(
    scope_id: str, kind: str, value: str, localized: str, current: int, limit: int
) -> dict[str, Any]:
    return {
        "id": f"{scope_id}/usages/{localized.replace(' ', '_')}",
        "type": _USAGE_TYPE.format(kind),
        "currentValue": current,
        "limit": limit,
        "name": {"value": value, "localizedValue": localized},
        "unit": "Count",
    }


def usage_body(
    scope: FakeScope,
    family: str,
    current: int,
    limit: int,
    *,
    naming: UsageNaming | None = None,
) -> dict[str, Any]:
    """A VM family's dedicated vCPU usage, named in ``naming`` form (default: the scope's)."""
    display = family_display_name(family)
    form = naming or scope.usage_naming
    value = display if form == "display" else family
    sub = f"/subscriptions/{scope.subscription_id}"
    return _usage_entry(sub, "vmFamily", value, display, current, limit)


def regional_usage_body(
    scope: FakeScope, current: int | None, limit: int, *, low_priority: bool = False
) -> dict[str, Any]:
    """A regional vCPU total; ``current=None`` sums the families' usage when answered."""
    name = LOW_PRIORITY_TOTAL if low_priority else REGIONAL_TOTAL
    kind = "lowPriorityCores" if low_priority else "dedicatedCores"
    body = _usage_entry(f"/subscriptions/{scope.subscription_id}", kind, name, name, 0, limit)
    body["id"] = f"/subscriptions/{scope.subscription_id}/usages"
    body["currentValue"] = current
    return body


def put_family_usage(
    store: FakeStore, family: str, current: int, limit: int, *, naming: UsageNaming | None
) -> None:
    """Store a family's usage under the vmSizes spelling of its key (matched ignoring case)."""
    known = {str(s["family"]).lower(): str(s["family"]) for s in store.list_vm_sizes()}
    family = known.get(family.lower(), family)
    store.put_usage(family, usage_body(store.scope, family, current, limit, naming=naming))


def put_regional_quota(
    store: FakeStore, limit: int, current: int | None, low_priority_limit: int | None
) -> None:
    store.put_usage(REGIONAL_TOTAL, regional_usage_body(store.scope, current, limit))
    if low_priority_limit is not None:
        low = regional_usage_body(store.scope, 0, low_priority_limit, low_priority=True)
        store.put_usage(LOW_PRIORITY_TOTAL, low)


def _listed_usages(store: FakeStore) -> list[dict[str, Any]]:
    """The usages list as Usage/list.json orders it: regional dedicated total, families (each
    with its per-workspace duplicate), low-priority total, families' low-priority entries."""
    regional: dict[str, dict[str, Any]] = {}
    families: list[dict[str, Any]] = []
    for body in store.list_usages():
        if body["name"]["value"] in (REGIONAL_TOTAL, LOW_PRIORITY_TOTAL):
            regional[body["name"]["value"]] = body
        else:
            families.append(body)
    listed: list[dict[str, Any]] = []
    dedicated_sum = sum(int(b["currentValue"]) for b in families)

    def total(name: str, default_current: int) -> None:
        if name in regional:
            body = dict(regional[name])
            if body["currentValue"] is None:
                body["currentValue"] = default_current
            listed.append(body)

    total(REGIONAL_TOTAL, dedicated_sum)
    ws_id = store.scope.workspace_id
    for body in families:
        listed.append(dict(body))
        duplicate = dict(body, id=f"{ws_id}/usages/{body['id'].rsplit('/', 1)[-1]}")
        duplicate["type"] = _USAGE_TYPE.format("workspaces")
        listed.append(duplicate)
    total(LOW_PRIORITY_TOTAL, 0)
    sub = f"/subscriptions/{store.scope.subscription_id}"
    for body in families:
        name = body["name"]
        if name["value"] != name["localizedValue"]:
            continue  # key-named families: the key has no low-priority spelling
        low = str(name["localizedValue"]).replace("Dedicated", "LowPriority")
        listed.append(_usage_entry(sub, "vmFamily", low, low, 0, -1))
    return listed


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
    if store.list_vm_sizes() and store.find_vm_size(vm_size) is None:
        # Not documented for Azure ML; the code Azure compute services use for this case.
        return azure_error(
            400,
            "VMSizeNotSupported",
            f"Virtual Machine size: '{vm_size}' is not supported for subscription "
            f"{store.scope.subscription_id} in location '{store.scope.location}'. List the "
            "sizes the region offers with `ml_client.compute.list_sizes()`.",
            target="properties.properties.vmSize",
        )
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

    accepted = {k: body[k] for k in ("id", "type", "name", "location")}
    accepted["properties"] = {"computeType": "AmlCompute", "provisioningState": "Creating"}
    # The PUT reply carries only the type and state (Compute/createOrUpdate/BasicAmlCompute.json)
    return lro_accepted(
        store,
        200 if existed else 201,
        accepted,
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
    return Reply(json={"value": _listed_usages(store)})


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
