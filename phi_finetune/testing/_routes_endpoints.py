"""Managed online endpoints and deployments, keys, logs, traffic, and scoring."""

from __future__ import annotations

import copy
import re
import secrets
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import WS, arm_id, not_found, route, system_data
from phi_finetune.testing._routes_workspace import check_workspace, lro_accepted
from phi_finetune.testing._state import DeploymentScript

if TYPE_CHECKING:
    from phi_finetune.testing._fake_service import FakeAzureML

__all__ = ["ENDPOINT_NAME", "ROUTES"]

ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_EP = WS + r"/onlineEndpoints/(?P<ep>[^/]+)"
_DEP = _EP + r"/deployments/(?P<dep>[^/]+)"
_SCORE = r"(?P<ep>[a-z0-9-]+)\.(?P<loc>[a-z0-9]+)\.inference\.ml\.azure\.com/score"


def _endpoint_body(fake: FakeAzureML, name: str, sent: dict[str, Any]) -> dict[str, Any]:
    props = sent.get("properties") or {}
    return {
        "id": arm_id(fake, f"/onlineEndpoints/{name}"),
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": fake.location,
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
            "scoringUri": fake.scoring_uri(name),
            "swaggerUri": fake.scoring_uri(name).removesuffix("/score") + "/swagger.json",
            "provisioningState": "Creating",
            "traffic": dict(props.get("traffic") or {}),
            "mirrorTraffic": dict(props.get("mirrorTraffic") or {}),
            "publicNetworkAccess": props.get("publicNetworkAccess") or "Enabled",
        },
        "systemData": system_data(),
    }


def _check_traffic(fake: FakeAzureML, name: str, traffic: dict[str, Any]) -> Reply | None:
    total = 0
    for dep, share in traffic.items():
        if (name, dep) not in fake._deployments:
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


def _endpoint_put(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
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
    traffic = dict((sent.get("properties") or {}).get("traffic") or {})
    existing = fake._endpoints.get(name)
    if existing is not None:
        bad = _check_traffic(fake, name, traffic)
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

        return lro_accepted(fake, 200, existing, on_done=updated)
    if traffic:
        bad = _check_traffic(fake, name, traffic)
        if bad is not None:
            return bad
    body = _endpoint_body(fake, name, sent)
    fake._endpoints[name] = body
    fake._endpoint_keys[name] = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    fake.keys_issued.extend(fake._endpoint_keys[name])

    def created() -> None:
        body["properties"]["provisioningState"] = "Succeeded"

    return lro_accepted(fake, 201, body, on_done=created)


def _endpoint_get(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    body = fake._endpoints.get(m["ep"])
    if body is None:
        return not_found("Online endpoint", m["ep"])
    return Reply(json=body)


def _endpoint_list(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    return Reply(json={"value": list(fake._endpoints.values())})


def _endpoint_delete(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    name = m["ep"]
    body = fake._endpoints.get(name)
    if body is None:
        return Reply(status=204)
    body["properties"]["provisioningState"] = "Deleting"

    def deleted() -> None:
        fake._endpoints.pop(name, None)
        fake._endpoint_keys.pop(name, None)
        for key in [k for k in fake._deployments if k[0] == name]:
            fake._deployments.pop(key, None)
            fake._deployment_logs.pop(key, None)

    return lro_accepted(fake, 202, None, on_done=deleted)


def _keys(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    keys = fake._endpoint_keys.get(m["ep"])
    if keys is None:
        return not_found("Online endpoint", m["ep"])
    return Reply(json={"primaryKey": keys[0], "secondaryKey": keys[1]})


def _regenerate(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    keys = fake._endpoint_keys.get(m["ep"])
    if keys is None:
        return not_found("Online endpoint", m["ep"])
    which = str((req.json or {}).get("keyType", "Primary")).lower()
    new = secrets.token_urlsafe(32)
    fake.keys_issued.append(new)
    fake._endpoint_keys[m["ep"]] = (new, keys[1]) if which == "primary" else (keys[0], new)
    return lro_accepted(fake, 202, None)


# ---------------------------------------------------------------------------- deployments


def _take_script(fake: FakeAzureML, endpoint: str, name: str) -> DeploymentScript:
    for script in list(fake._deployment_scripts):
        if script.endpoint in (None, endpoint) and script.name in (None, name):
            fake._deployment_scripts.remove(script)
            return script
    return DeploymentScript(
        "Succeeded",
        ["Starting inference server", "Loading model", "Model loaded"],
        None,
        fake.lro_polls,
    )


def _quota_problem(fake: FakeAzureML, instance_type: str, count: int) -> Reply | None:
    size = next((s for n, s in fake._vm_sizes.items() if n.lower() == instance_type.lower()), None)
    if size is None:
        return None
    usage = fake._usages.get(size["family"])
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
        f"{fake.subscription_id}. Current usage/limit: {usage['currentValue']}/{usage['limit']}. "
        f"Additional needed: {needed}. Family: {size['family']}.",
    )


def _deployment_put(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    endpoint, name = m["ep"], m["dep"]
    if endpoint not in fake._endpoints:
        return not_found("Online endpoint", endpoint)
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
    if (endpoint, name) not in fake._deployments and instance_type:
        quota = _quota_problem(fake, instance_type, count)
        if quota is not None:
            return quota
    script = _take_script(fake, endpoint, name)
    body = copy.deepcopy(sent)
    body["id"] = arm_id(fake, f"/onlineEndpoints/{endpoint}/deployments/{name}")
    body["name"] = name
    body["type"] = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
    body["location"] = fake.location
    body["kind"] = "Managed"
    body["systemData"] = system_data()
    body["sku"] = {"name": "Default", "tier": "Standard", "capacity": count}
    body["properties"].setdefault("endpointComputeType", "Managed")
    body["properties"].setdefault("scaleSettings", {"scaleType": "Default"})
    body["properties"]["provisioningState"] = "Creating"
    existed = (endpoint, name) in fake._deployments
    fake._deployments[(endpoint, name)] = body
    fake._deployment_logs[(endpoint, name)] = list(script.logs)

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
        fake,
        200 if existed else 201,
        body,
        on_done=finished,
        final=script.outcome,
        error=error,
        polls=script.polls,
    )


def _deployment_get(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    body = fake._deployments.get((m["ep"], m["dep"]))
    if body is None:
        return not_found("Online deployment", f"{m['ep']}/{m['dep']}")
    return Reply(json=body)


def _deployment_list(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    value = [b for (ep, _), b in fake._deployments.items() if ep == m["ep"]]
    return Reply(json={"value": value})


def _deployment_delete(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    key = (m["ep"], m["dep"])
    if key not in fake._deployments:
        return Reply(status=204)
    traffic = fake._endpoints.get(m["ep"], {}).get("properties", {}).get("traffic", {})
    if int(traffic.get(m["dep"], 0)) > 0:
        return azure_error(
            400,
            "BadArgument",
            f"Deployment {m['dep']!r} still receives traffic; set its traffic to 0 first.",
        )

    def deleted() -> None:
        fake._deployments.pop(key, None)
        fake._deployment_logs.pop(key, None)

    return lro_accepted(fake, 202, None, on_done=deleted)


def _deployment_logs(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(fake, m)
    if bad is not None:
        return bad
    key = (m["ep"], m["dep"])
    if key not in fake._deployments:
        return not_found("Online deployment", f"{m['ep']}/{m['dep']}")
    lines = fake._deployment_logs.get(key, [])
    tail = (req.json or {}).get("tail") if isinstance(req.json, dict) else None
    if isinstance(tail, int) and tail > 0:
        lines = lines[-tail:]
    return Reply(json={"content": "".join(f"{line}\n" for line in lines)})


# ---------------------------------------------------------------------------- scoring


def _score(fake: FakeAzureML, req: FakeRequest, m: re.Match[str]) -> Reply:
    endpoint = next((n for n in fake._endpoints if n.lower() == m["ep"]), None)
    if endpoint is None:
        return Reply(status=404, json={"message": f"Endpoint {m['ep']!r} not found."})
    auth = fake.raw_header("Authorization") or ""
    token = auth.removeprefix("Bearer ").strip()
    if not token or token not in fake._endpoint_keys.get(endpoint, ()):
        return Reply(
            status=401,
            body=b"key_auth_access_denied",
            headers={"content-type": "text/plain", "www-authenticate": "Bearer"},
        )
    wanted = fake.raw_header("azureml-model-deployment")
    traffic = fake._endpoints[endpoint]["properties"].get("traffic") or {}
    if wanted:
        deployment: str | None = wanted
    else:
        routed = [(int(share), dep) for dep, share in traffic.items() if int(share) > 0]
        deployment = max(routed)[1] if routed else None
    if deployment is None or (endpoint, deployment) not in fake._deployments:
        return Reply(
            status=404,
            json={
                "message": "No valid deployments to route to. Please check that the endpoint "
                "has at least one deployment with positive weight values or use a deployment "
                "specific header to route."
            },
        )
    state = fake._deployments[(endpoint, deployment)]["properties"].get("provisioningState")
    if state != "Succeeded":
        return Reply(status=503, json={"message": f"Deployment {deployment!r} is {state}."})
    if req.json is None:
        return Reply(status=400, json={"message": "The request body must be JSON."})
    fake.scoring_calls.append((endpoint, deployment, req.json))
    answer = fake.scorer(req.json, deployment)
    if isinstance(answer, Reply):
        return answer
    return Reply(json=answer, headers={"azureml-model-deployment": deployment})


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
]
