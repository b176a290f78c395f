"""Managed online endpoints and deployments, keys, logs, traffic, and scoring."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._openai_chat import chat_completion_reply
from phi_finetune.testing._router import WS, not_found, paged, route, system_data
from phi_finetune.testing._routes_workspace import check_workspace, conflict, lro_accepted
from phi_finetune.testing._state import DeploymentScript

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore

__all__ = ["CHAT_ROUTE_TAG", "ENDPOINT_NAME", "ROUTES"]

ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_EP = WS + r"/onlineEndpoints/(?P<ep>[^/]+)"
_DEP = _EP + r"/deployments/(?P<dep>[^/]+)"
_HOST = r"(?P<ep>[a-z0-9-]+)\.(?P<loc>[a-z0-9]+)\.inference\.ml\.azure\.com"
_SCORE = _HOST + r"/score"
# The foundation-model inference container's OpenAI-compatible route (azureml-examples build
# it as ``scoring_uri.replace("/score", "/v1/chat/completions")``).
_CHAT = _HOST + r"/v1/chat/completions"
#: A deployment (or endpoint) tag: ``"off"`` makes the deployment answer 404 on the chat route,
#: like a container that serves ``/score`` only.
CHAT_ROUTE_TAG = "fake-azureml-chat-completions"


def _endpoint_body(store: FakeStore, name: str, sent: dict[str, Any]) -> dict[str, Any]:
    props = sent.get("properties") or {}
    return {
        "id": store.scope.arm_id(f"/onlineEndpoints/{name}"),
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": store.scope.location,
        "kind": "Managed",
        "tags": dict(sent.get("tags") or {}),
        "identity": {
            "type": "SystemAssigned",
            "principalId": "00000000-0000-0000-0000-000000000111",
            "tenantId": "00000000-0000-0000-0000-0000000000aa",
        },
        "properties": {
            "authMode": props.get("authMode") or "Key",
            "description": props.get("description"),
            "properties": dict(props.get("properties") or {}),
            "scoringUri": store.scope.scoring_uri(name),
            "swaggerUri": store.scope.scoring_uri(name).removesuffix("/score") + "/swagger.json",
            "provisioningState": "Creating",
            "traffic": dict(props.get("traffic") or {}),
            "mirrorTraffic": dict(props.get("mirrorTraffic") or {}),
            "publicNetworkAccess": props.get("publicNetworkAccess") or "Enabled",
        },
        "systemData": system_data(),
    }


# Endpoint properties an api-version's swagger does not define yet: a reply at that version
# leaves them out (mfe.json 2022-02-01-preview has no publicNetworkAccess on OnlineEndpoint,
# 2023-04-01-preview has; tests/data/contract/mfe.*.json).
_ENDPOINT_KEYS_ABSENT_AT = {"2022-02-01-preview": ("publicNetworkAccess",)}


def _endpoint_view(body: dict[str, Any], req: FakeRequest) -> dict[str, Any]:
    """``body`` as the api-version of ``req`` defines it (a copy when keys are left out)."""
    absent = _ENDPOINT_KEYS_ABSENT_AT.get(req.query.get("api-version", ""), ())
    props = body.get("properties") or {}
    if not any(key in props for key in absent):
        return body
    return {**body, "properties": {k: v for k, v in props.items() if k not in absent}}


def _check_traffic(store: FakeStore, name: str, traffic: dict[str, Any]) -> Reply | None:
    total = 0
    for dep, share in traffic.items():
        if store.get_deployment(name, dep) is None:
            return azure_error(
                400,
                "BadArgument",
                f"Deployment {dep!r} of endpoint {name!r} does not exist; traffic can only be "
                "routed to existing deployments.",
            )
        total += int(share)
    if traffic and total not in (0, 100):
        return azure_error(400, "BadArgument", f"Traffic values must sum to 0 or 100, not {total}.")
    return None


def _endpoint_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["ep"]
    sent = req.json if isinstance(req.json, dict) else {}
    if not ENDPOINT_NAME.match(name) or not 3 <= len(name) <= 32:
        return azure_error(
            400,
            "BadArgument",
            f"Endpoint name {name!r} is invalid: use 3-32 characters, start with a letter, and "
            "use only letters, digits and '-' (not at the end).",
        )
    busy = conflict(store, f"onlineEndpoints/{name}")
    if busy is not None:
        return busy
    traffic = dict((sent.get("properties") or {}).get("traffic") or {})
    existing = store.get_endpoint(name)
    if existing is None:
        reserved = _name_reserved(store, name)
        if reserved is not None:
            return reserved
    if existing is not None:
        bad = _check_traffic(store, name, traffic)
        if bad is not None:
            return bad
        props = sent.get("properties") or {}
        existing["properties"]["traffic"] = traffic
        if props.get("mirrorTraffic") is not None:
            existing["properties"]["mirrorTraffic"] = dict(props["mirrorTraffic"])
        if props.get("description") is not None:
            existing["properties"]["description"] = props["description"]
        if sent.get("tags") is not None:
            existing["tags"] = dict(sent["tags"])
        existing["properties"]["provisioningState"] = "Updating"

        def updated() -> None:
            existing["properties"]["provisioningState"] = "Succeeded"

        return lro_accepted(
            store,
            200,
            _endpoint_view(existing, req),
            on_done=updated,
            resource=f"onlineEndpoints/{name}",
        )
    if traffic:
        bad = _check_traffic(store, name, traffic)
        if bad is not None:
            return bad
    body = _endpoint_body(store, name, sent)
    store.put_endpoint(name, body)

    def created() -> None:
        body["properties"]["provisioningState"] = "Succeeded"

    return lro_accepted(
        store,
        201,
        _endpoint_view(body, req),
        on_done=created,
        resource=f"onlineEndpoints/{name}",
        action="Creating",
    )


def _endpoint_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    store.tick(f"onlineEndpoints/{m['ep']}")
    body = store.get_endpoint(m["ep"])
    if body is None:
        return not_found("Online endpoint", m["ep"])
    return Reply(json=_endpoint_view(body, req))


def _endpoint_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    return paged(store, req, [_endpoint_view(b, req) for b in store.list_endpoints()])


def _endpoint_delete(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["ep"]
    body = store.get_endpoint(name)
    if body is None:
        return Reply(status=204)
    busy = conflict(store, f"onlineEndpoints/{name}")
    if busy is not None:
        return busy
    body["properties"]["provisioningState"] = "Deleting"
    return lro_accepted(
        store,
        202,
        None,
        on_done=lambda: store.delete_endpoint(name),
        resource=f"onlineEndpoints/{name}",
        action="Deleting",
    )


def _name_reserved(store: FakeStore, name: str) -> Reply | None:
    left = store.reserved_for(name)
    if left is None:
        return None
    return azure_error(
        409,
        "Conflict",
        f"Endpoint name {name!r} is not available: an endpoint of that name was deleted "
        f"recently and the name is reserved for about {left:.0f} more seconds. Use another "
        "name or retry later.",
        details=[{"code": "EndpointNameNotAvailable", "message": f"{name!r} is reserved."}],
    )


def _missing_endpoint(store: FakeStore, endpoint: str) -> Reply | None:
    if store.get_endpoint(endpoint) is None:
        return not_found("Online endpoint", endpoint)
    return None


def _keys(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    keys = store.endpoint_keys(m["ep"])
    if keys is None:
        return not_found("Online endpoint", m["ep"])
    return Reply(json={"primaryKey": keys[0], "secondaryKey": keys[1]})


def _regenerate(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    if store.endpoint_keys(m["ep"]) is None:
        return not_found("Online endpoint", m["ep"])
    which = str((req.json or {}).get("keyType", "Primary")).lower()
    store.regenerate_key(m["ep"], "primary" if which == "primary" else "secondary")
    return lro_accepted(store, 202, None)


# ---------------------------------------------------------------------------- deployments


def _quota_problem(store: FakeStore, instance_type: str, count: int) -> Reply | None:
    size = store.find_vm_size(instance_type)
    if size is None:
        return None
    usage = store.get_usage(size["family"])
    if usage is None:
        return None
    needed = int(size["vCPUs"]) * count
    available = int(usage["limit"]) - int(usage["currentValue"])
    if needed <= available:
        return None
    return azure_error(
        400,
        "QuotaExceeded",
        f"Not enough quota available for {instance_type} in SubscriptionId "
        f"{store.scope.subscription_id}. Current usage/limit: "
        f"{usage['currentValue']}/{usage['limit']}. "
        f"Additional needed: {needed}. Family: {size['family']}.",
    )


def _deployment_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    endpoint, name = m["ep"], m["dep"]
    if store.get_endpoint(endpoint) is None:
        return not_found("Online endpoint", endpoint)
    busy = conflict(store, f"onlineEndpoints/{endpoint}") or conflict(
        store, f"onlineEndpoints/{endpoint}/deployments/{name}"
    )
    if busy is not None:
        return busy
    if not ENDPOINT_NAME.match(name) or not 3 <= len(name) <= 32:
        return azure_error(
            400,
            "BadArgument",
            f"Deployment name {name!r} is invalid: use 3-32 letters, digits or '-', "
            "starting with a letter.",
        )
    sent = req.json if isinstance(req.json, dict) else {}
    props = sent.get("properties")
    if not isinstance(props, dict):
        return azure_error(400, "UserError", "The request body has no 'properties'.")
    sku = sent.get("sku") or {}
    count = int(sku.get("capacity") or 1)
    instance_type = str(props.get("instanceType") or "")
    if store.get_deployment(endpoint, name) is None and instance_type:
        quota = _quota_problem(store, instance_type, count)
        if quota is not None:
            return quota
    script = store.take_deployment_script(endpoint, name) or DeploymentScript.build(
        polls=store.lro_polls
    )
    body = copy.deepcopy(sent)
    body["id"] = store.scope.arm_id(f"/onlineEndpoints/{endpoint}/deployments/{name}")
    body["name"] = name
    body["type"] = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
    body["location"] = store.scope.location
    body["kind"] = "Managed"
    body["systemData"] = system_data()
    body["sku"] = {"name": "Default", "tier": "Standard", "capacity": count}
    body["properties"].setdefault("endpointComputeType", "Managed")
    body["properties"].setdefault("scaleSettings", {"scaleType": "Default"})
    body["properties"]["provisioningState"] = "Creating"
    existed = store.put_deployment(endpoint, name, body, script.logs)

    error = None
    if script.outcome == "Failed":
        error = {
            "code": "DeploymentFailed",
            "message": script.error_message or "Deployment failed.",
            "details": [
                {"code": "ResourceNotReady", "message": script.error_message or "not ready"}
            ],
        }

    def finished() -> None:
        body["properties"]["provisioningState"] = script.outcome

    return lro_accepted(
        store,
        200 if existed else 201,
        body,
        on_done=finished,
        final=script.outcome,
        error=error,
        polls=script.polls,
        resource=f"onlineEndpoints/{endpoint}/deployments/{name}",
        action="Updating" if existed else "Creating",
    )


def _deployment_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    missing = _missing_endpoint(store, m["ep"])
    if missing is not None:
        return missing
    store.tick(f"onlineEndpoints/{m['ep']}/deployments/{m['dep']}")
    body = store.get_deployment(m["ep"], m["dep"])
    if body is None:
        return not_found("Online deployment", f"{m['ep']}/{m['dep']}")
    return Reply(json=body)


def _deployment_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    missing = _missing_endpoint(store, m["ep"])
    if missing is not None:
        return missing
    return paged(store, req, store.list_deployments(m["ep"]))


def _deployment_delete(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    endpoint, name = m["ep"], m["dep"]
    missing = _missing_endpoint(store, endpoint)
    if missing is not None:
        return missing
    deployment = store.get_deployment(endpoint, name)
    if deployment is None:
        return Reply(status=204)
    busy = conflict(store, f"onlineEndpoints/{endpoint}/deployments/{name}")
    if busy is not None:
        return busy
    traffic = (store.get_endpoint(endpoint) or {}).get("properties", {}).get("traffic", {})
    if int(traffic.get(m["dep"], 0)) > 0:
        return azure_error(
            400,
            "BadArgument",
            f"Deployment {m['dep']!r} still receives traffic; set its traffic to 0 first.",
        )

    deployment["properties"]["provisioningState"] = "Deleting"
    return lro_accepted(
        store,
        202,
        None,
        on_done=lambda: store.delete_deployment(endpoint, name),
        resource=f"onlineEndpoints/{endpoint}/deployments/{name}",
        action="Deleting",
    )


def _deployment_logs(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    missing = _missing_endpoint(store, m["ep"])
    if missing is not None:
        return missing
    if store.get_deployment(m["ep"], m["dep"]) is None:
        return not_found("Online deployment", f"{m['ep']}/{m['dep']}")
    lines = store.deployment_logs(m["ep"], m["dep"])
    tail = (req.json or {}).get("tail") if isinstance(req.json, dict) else None
    if isinstance(tail, int) and tail > 0:
        lines = lines[-tail:]
    return Reply(json={"content": "".join(f"{line}\n" for line in lines)})


# ---------------------------------------------------------------------------- scoring


def _routed(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply | tuple[str, str]:
    """``(endpoint, deployment)`` a scoring call goes to, or the reply refusing it."""
    endpoint = store.find_endpoint(m["ep"])
    if endpoint is None:
        return Reply(status=404, json={"message": f"Endpoint {m['ep']!r} not found."})
    auth = store.raw_header("Authorization") or ""
    token = auth.removeprefix("Bearer ").strip()
    if not token or token not in (store.endpoint_keys(endpoint) or ()):
        return Reply(
            status=401,
            body=b"key_auth_access_denied",
            headers={"content-type": "text/plain", "www-authenticate": "Bearer"},
        )
    wanted = store.raw_header("azureml-model-deployment")
    traffic = (store.get_endpoint(endpoint) or {}).get("properties", {}).get("traffic") or {}
    if wanted:
        deployment: str | None = wanted
    else:
        routed = [(int(share), dep) for dep, share in traffic.items() if int(share) > 0]
        deployment = max(routed)[1] if routed else None
    deployment_body = None if deployment is None else store.get_deployment(endpoint, deployment)
    if deployment is None or deployment_body is None:
        return Reply(
            status=404,
            json={
                "message": "No valid deployments to route to. Please check that the endpoint "
                "has at least one deployment with positive weight values or use a deployment "
                "specific header to route."
            },
        )
    state = deployment_body["properties"].get("provisioningState")
    if state != "Succeeded":
        return Reply(status=503, json={"message": f"Deployment {deployment!r} is {state}."})
    if req.json is None:
        return Reply(status=400, json={"message": "The request body must be JSON."})
    return endpoint, deployment


def _score(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    routed = _routed(store, req, m)
    if isinstance(routed, Reply):
        return routed
    endpoint, deployment = routed
    store.record_scoring_call(endpoint, deployment, req.json)
    answer = store.scorer(req.json, deployment)
    if isinstance(answer, Reply):
        return answer
    return Reply(json=answer, headers={"azureml-model-deployment": deployment})


def _serves_chat(store: FakeStore, endpoint: str, deployment: str) -> bool:
    for body in (store.get_deployment(endpoint, deployment), store.get_endpoint(endpoint)):
        tags = (body or {}).get("tags") or {}
        if str(tags.get(CHAT_ROUTE_TAG, "")).lower() == "off":
            return False
    return True


def _chat(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    """``/v1/chat/completions``: the scorer's answer to the same messages, OpenAI-shaped."""
    routed = _routed(store, req, m)
    if isinstance(routed, Reply):
        return routed
    endpoint, deployment = routed
    if not _serves_chat(store, endpoint, deployment):
        return Reply(status=404, body=b"Not Found", headers={"content-type": "text/plain"})
    return chat_completion_reply(
        store,
        req.json,
        endpoint=endpoint,
        deployment=deployment,
        model=deployment,
        headers={"azureml-model-deployment": deployment},
    )


ROUTES = [
    route("endpoints.list", "GET", WS + r"/onlineEndpoints", _endpoint_list),
    route("endpoints.get", "GET", _EP, _endpoint_get),
    route("endpoints.create", "PUT", _EP, _endpoint_put),
    route("endpoints.delete", "DELETE", _EP, _endpoint_delete),
    route("endpoints.list_keys", "POST", _EP + r"/listKeys", _keys),
    route("endpoints.regenerate_keys", "POST", _EP + r"/regenerateKeys", _regenerate),
    route("deployments.list", "GET", _EP + r"/deployments", _deployment_list),
    route("deployments.get", "GET", _DEP, _deployment_get),
    route("deployments.create", "PUT", _DEP, _deployment_put),
    route("deployments.delete", "DELETE", _DEP, _deployment_delete),
    route("deployments.get_logs", "POST", _DEP + r"/getLogs", _deployment_logs),
    route("scoring", "POST", _SCORE, _score),
    route("scoring.chat", "POST", _CHAT, _chat),
]
