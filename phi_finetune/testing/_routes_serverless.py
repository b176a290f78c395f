"""Serverless endpoints, their keys and chat route, and marketplace subscriptions.

Contract: mfe.json 2024-01-01-preview of Microsoft.MachineLearningServices (the api-version
azure-ai-ml 1.35.2 sends for ``ml_client.serverless_endpoints`` and
``ml_client.marketplace_subscriptions``): ``ServerlessEndpointTrackedResource``,
``MarketplaceSubscriptionResource``, ``EndpointAuthKeys``; PUT answers 201 with
``Azure-AsyncOperation`` (final state from the original URI), DELETE 202 with ``Location`` and
``Retry-After`` (200/204 when there is nothing to delete), ``regenerateKeys`` 200 with the keys.
Where the service's behaviour is not published, the choice made is named beside the code and in
docs/testing.md.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._maas_catalog import publisher
from phi_finetune.testing._openai_chat import chat_completion_reply
from phi_finetune.testing._router import WS, Handler, not_found, paged, route, system_data
from phi_finetune.testing._routes_workspace import check_workspace, conflict, lro_accepted

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore

__all__ = ["FIRST_PARTY_REGISTRIES", "ROUTES", "inference_uri"]

FIRST_PARTY_REGISTRIES = ("azureml",)
"""Registries of Microsoft's own (first-party) models: no marketplace subscription needed."""

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,51}$")  # ServerlessEndpoints_CreateOrUpdate `name`
_SE = WS + r"/serverlessEndpoints/(?P<name>[^/]+)"
_MS = WS + r"/marketplaceSubscriptions/(?P<name>[^/]+)"
_INFERENCE = r"(?P<ep>[a-z0-9-]+)\.(?P<loc>[a-z0-9]+)\.models\.ai\.azure\.com"
_REGISTRY_MODEL = re.compile(
    r"^azureml://registries/(?P<reg>[^/]+)/models/(?P<name>[^/]+)(?:/versions/[^/]+)?$", re.I
)
_WORKSPACE_MODEL = re.compile(
    r"^azureml://locations/(?P<loc>[^/]+)/workspaces/(?P<ws>[^/]+)/models/(?P<name>[^/]+)"
    r"/versions/(?P<ver>[^/]+)$",
    re.I,
)
_WORKSPACE_GUID = "00000000-0000-0000-0000-0000000000ee"  # properties.workspaceId of the fake


def inference_uri(store: FakeStore, name: str) -> str:
    """``properties.inferenceEndpoint.uri`` of a serverless endpoint (models.ai.azure.com)."""
    return f"https://{name.lower()}.{store.scope.location}.models.ai.azure.com"


def _hub_problem(store: FakeStore, what: str) -> Reply | None:
    if not store.serverless_needs_hub or store.scope.workspace_kind.lower() == "project":
        return None
    return azure_error(
        400,
        "UserError",
        f"{what} needs a hub-based project: workspace {store.scope.workspace_name!r} is of "
        f"kind {store.scope.workspace_kind!r}. Use a project created in an Azure AI hub.",
        target="workspace",
    )


# ---------------------------------------------------------------------------- models


def _registry_model_problem(store: FakeStore, model_id: str, reg: str, name: str) -> Reply | None:
    versions = store.registry_versions("models", reg, name)
    if not versions:
        return azure_error(
            400,
            "UserError",
            f"Model {model_id!r} was not found: registry {reg!r} has no model {name!r}.",
            target="properties.modelSettings.modelId",
            details=[{"code": "NotFound", "message": f"Model {name!r} not found."}],
        )
    options = (versions[0]["properties"].get("system_metadata") or {}).get(
        "deploymentOptions"
    ) or []
    if isinstance(options, list) and options and "ServerlessMaaS" not in options:
        return azure_error(
            400,
            "UserError",
            f"Model {model_id!r} cannot be deployed as a serverless endpoint (its deployment "
            f"options are {', '.join(map(str, options))}).",
            target="properties.modelSettings.modelId",
        )
    if reg.lower() in FIRST_PARTY_REGISTRIES:
        return None
    if store.serverless.subscription_for(model_id) is None:
        return azure_error(
            400,
            "UserError",
            f"Model {model_id!r} is a marketplace offer: create a marketplace subscription for "
            "it in this workspace first (ml_client.marketplace_subscriptions).",
            target="properties.modelSettings.modelId",
        )
    return None


def _custom_model_problem(
    store: FakeStore, endpoint: str, model_id: str, found: re.Match[str]
) -> Reply | None:
    here = found["ws"].lower() == _WORKSPACE_GUID and found["loc"].lower() == (
        store.scope.location.lower()
    )
    if not here or store.get_asset("models", found["name"], found["ver"]) is None:
        return azure_error(
            404,
            "UserError",
            f"Model {model_id!r} was not found in workspace {store.scope.workspace_name!r} "
            f"({store.scope.location}, workspace id {_WORKSPACE_GUID}).",
            target="properties.modelSettings.modelId",
            details=[{"code": "NotFound", "message": "Model not found."}],
        )
    for other, body in store.serverless.endpoints.items():
        used = str(body["properties"].get("modelSettings", {}).get("modelId", ""))
        if other != endpoint and used.lower() == model_id.lower():
            # The Azure AI Foundry docs: a fine-tuned custom model allows one serverless
            # deployment. The error text is this fake's (not published).
            return azure_error(
                409,
                "Conflict",
                f"Model {model_id!r} is already deployed as serverless endpoint {other!r}; a "
                "fine-tuned model allows one serverless deployment. Delete that endpoint or "
                "use it.",
                target="properties.modelSettings.modelId",
                details=[{"code": "ModelAlreadyDeployed", "message": f"Deployed as {other!r}."}],
            )
    return None


# ---------------------------------------------------------------------------- endpoints


def _endpoint_body(
    store: FakeStore, name: str, sent: dict[str, Any], model_id: str
) -> dict[str, Any]:
    props = sent.get("properties") or {}
    body: dict[str, Any] = {
        "id": store.scope.arm_id(f"/serverlessEndpoints/{name}"),
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/serverlessEndpoints",
        "location": str(sent.get("location") or store.scope.location),
        "tags": dict(sent.get("tags") or {}),
        "sku": {"name": str((sent.get("sku") or {}).get("name") or "Consumption")},
        "properties": {
            "authMode": str(props.get("authMode") or "Key"),
            "modelSettings": {"modelId": model_id},
            "inferenceEndpoint": {"uri": inference_uri(store, name), "headers": {}},
            "provisioningState": "Creating",
            "endpointState": "Creating",
        },
        "systemData": system_data(),
    }
    subscription = store.serverless.subscription_for(model_id)
    if subscription is not None:
        body["properties"]["marketplaceSubscriptionId"] = subscription["id"]
    return body


def _endpoint_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    if not _NAME.match(name):
        return azure_error(
            400,
            "BadArgument",
            f"Serverless endpoint name {name!r} is invalid: use 1-52 letters, digits or '-', "
            "starting with a letter.",
            target="name",
        )
    busy = conflict(store, f"serverlessEndpoints/{name}")
    if busy is not None:
        return busy
    sent = req.json if isinstance(req.json, dict) else {}
    model_id = str(((sent.get("properties") or {}).get("modelSettings") or {}).get("modelId") or "")
    if not model_id:
        return azure_error(
            400,
            "UserError",
            "properties.modelSettings.modelId is required: the model to serve.",
            target="properties.modelSettings.modelId",
        )
    existing = store.serverless.get_endpoint(name)
    if existing is not None:
        served = str(existing["properties"]["modelSettings"]["modelId"])
        if served.lower() != model_id.lower():
            return azure_error(
                400,
                "UserError",
                f"Serverless endpoint {name!r} serves {served!r}; its model cannot change. Use "
                "a new endpoint.",
                target="properties.modelSettings.modelId",
            )
        if sent.get("tags") is not None:
            existing["tags"] = dict(sent["tags"])
        return Reply(json=existing)
    problem = _hub_problem(store, "A serverless endpoint")
    if problem is not None:
        return problem
    left = store.reserved_for(name)
    if left is not None:
        return azure_error(
            409,
            "Conflict",
            f"Serverless endpoint name {name!r} is not available: an endpoint of that name was "
            f"deleted recently and the name is reserved for about {left:.0f} more seconds. Use "
            "another name or retry later.",
            details=[{"code": "EndpointNameNotAvailable", "message": f"{name!r} is reserved."}],
        )
    registry = _REGISTRY_MODEL.match(model_id)
    custom = _WORKSPACE_MODEL.match(model_id)
    if registry is not None:
        problem = _registry_model_problem(store, model_id, registry["reg"], registry["name"])
    elif custom is not None:
        problem = _custom_model_problem(store, name, model_id, custom)
    else:
        problem = azure_error(
            400,
            "UserError",
            f"modelId {model_id!r} is neither azureml://registries/<registry>/models/<name> nor "
            "azureml://locations/<region>/workspaces/<workspace id>/models/<name>/versions/<v>.",
            target="properties.modelSettings.modelId",
        )
    if problem is not None:
        return problem
    body = _endpoint_body(store, name, sent, model_id)
    store.serverless.put_endpoint(name, body)

    def created() -> None:
        body["properties"]["provisioningState"] = "Succeeded"
        body["properties"]["endpointState"] = "Online"

    return lro_accepted(
        store,
        201,
        copy.deepcopy(body),
        on_done=created,
        resource=f"serverlessEndpoints/{name}",
        action="Creating",
    )


def _endpoint_delete(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    body = store.serverless.get_endpoint(name)
    if body is None:
        return Reply(status=204)
    busy = conflict(store, f"serverlessEndpoints/{name}")
    if busy is not None:
        return busy
    body["properties"]["provisioningState"] = "Deleting"
    body["properties"]["endpointState"] = "Deleting"

    def deleted() -> None:
        if store.serverless.delete_endpoint(name):
            store.reserve_name(name)

    reply = lro_accepted(
        store,
        202,
        None,
        on_done=deleted,
        resource=f"serverlessEndpoints/{name}",
        action="Deleting",
    )
    reply.headers["x-ms-async-operation-timeout"] = "PT1H"
    return reply


def _keys_of(store: FakeStore, name: str) -> tuple[str, str] | Reply:
    body = store.serverless.get_endpoint(name)
    keys = store.serverless.keys(name)
    if body is None or keys is None:
        return not_found("Serverless endpoint", name)
    if body["properties"].get("authMode") != "Key":
        return azure_error(
            400,
            "UserError",
            f"Serverless endpoint {name!r} uses {body['properties'].get('authMode')} "
            "authentication; it has no keys.",
        )
    return keys


def _list_keys(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    keys = _keys_of(store, m["name"])
    if isinstance(keys, Reply):
        return keys
    return Reply(json={"primaryKey": keys[0], "secondaryKey": keys[1]})


def _regenerate_keys(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    keys = _keys_of(store, m["name"])
    if isinstance(keys, Reply):
        return keys
    sent = req.json if isinstance(req.json, dict) else {}
    which = str(sent.get("keyType") or "")
    if which not in ("Primary", "Secondary"):
        return azure_error(
            400,
            "UserError",
            f"keyType {which!r} is not valid; use 'Primary' or 'Secondary'.",
            target="keyType",
        )
    value = sent.get("keyValue")
    # RegenerateEndpointKeysRequest.keyValue: "The value the key is set to"; without it the
    # service picks a new random key.
    new = store.serverless.set_key(
        m["name"], "primary" if which == "Primary" else "secondary", str(value) if value else None
    )
    return Reply(json={"primaryKey": new[0], "secondaryKey": new[1]})


# ---------------------------------------------------------------------------- marketplace


def _subscription_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    busy = conflict(store, f"marketplaceSubscriptions/{name}")
    if busy is not None:
        return busy
    sent = req.json if isinstance(req.json, dict) else {}
    model_id = str((sent.get("properties") or {}).get("modelId") or "")
    found = _REGISTRY_MODEL.match(model_id)
    if found is None:
        return azure_error(
            400,
            "UserError",
            f"properties.modelId {model_id!r} is required and must be a registry model id "
            "(azureml://registries/<registry>/models/<name>).",
            target="properties.modelId",
        )
    versions = store.registry_versions("models", found["reg"], found["name"])
    if found["reg"].lower() in FIRST_PARTY_REGISTRIES or (
        versions and publisher(versions[0]) == "Microsoft"
    ):
        # The azureml-examples notebook: creating a subscription "will throw exception if ...
        # subscription is not required (for example, if the model is not in the marketplace
        # like Phi family)". The code and text are this fake's; the service's are not published.
        return azure_error(
            400,
            "UserError",
            f"Model {model_id!r} is a first-party Microsoft model, not a marketplace offer: it "
            "needs no marketplace subscription. Create the serverless endpoint directly.",
            target="properties.modelId",
            details=[{"code": "MarketplaceSubscriptionNotRequired", "message": model_id}],
        )
    if not versions:
        return azure_error(
            400,
            "UserError",
            f"Model {model_id!r} was not found in registry {found['reg']!r}.",
            target="properties.modelId",
            details=[{"code": "NotFound", "message": f"Model {found['name']!r} not found."}],
        )
    if store.serverless.get_subscription(name) is not None:
        # The notebook: the call "will throw exception if the subscription already exists".
        return azure_error(
            409,
            "Conflict",
            f"Marketplace subscription {name!r} already exists in workspace "
            f"{store.scope.workspace_name!r}; get it or delete it first.",
            details=[{"code": "AlreadyExists", "message": f"{name!r} exists."}],
        )
    body: dict[str, Any] = {
        "id": store.scope.arm_id(f"/marketplaceSubscriptions/{name}"),
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/marketplaceSubscriptions",
        "properties": {
            "modelId": model_id,
            # Plan identifiers are the fake's own (a marketplace offer's are not published).
            "marketplacePlan": {
                "publisherId": found["reg"].lower(),
                "offerId": found["name"].lower(),
                "planId": f"{found['name'].lower()}-offer",
            },
            "marketplaceSubscriptionStatus": "PendingFulfillmentStart",
            "provisioningState": "Creating",
        },
        "systemData": system_data(),
    }
    store.serverless.put_subscription(name, body)

    def created() -> None:
        body["properties"]["marketplaceSubscriptionStatus"] = "Subscribed"
        body["properties"]["provisioningState"] = "Succeeded"

    return lro_accepted(
        store,
        201,
        copy.deepcopy(body),
        on_done=created,
        resource=f"marketplaceSubscriptions/{name}",
        action="Creating",
    )


def _subscription_delete(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    name = m["name"]
    body = store.serverless.get_subscription(name)
    if body is None:
        return Reply(status=204)
    busy = conflict(store, f"marketplaceSubscriptions/{name}")
    if busy is not None:
        return busy
    body["properties"]["provisioningState"] = "Deleting"
    return lro_accepted(
        store,
        202,
        None,
        on_done=lambda: store.serverless.delete_subscription(name),
        resource=f"marketplaceSubscriptions/{name}",
        action="Deleting",
    )


# ---------------------------------------------------------------------------- inference


def _presented_key(store: FakeStore) -> str:
    """The key a chat request carries: ``api-key``, ``Authorization: Bearer <key>``, or a bare
    ``Authorization: <key>`` (what the azureml-examples notebook sends)."""
    api_key = store.raw_header("api-key")
    if api_key:
        return api_key.strip()
    auth = (store.raw_header("Authorization") or "").strip()
    return auth[7:].strip() if auth.lower().startswith("bearer ") else auth


def _chat(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    name = store.serverless.find_endpoint(m["ep"])
    body = store.serverless.get_endpoint(name) if name else None
    if name is None or body is None:
        return Reply(
            status=404,
            json={"error": {"code": "NotFound", "message": f"Endpoint {m['ep']!r} not found."}},
        )
    key = _presented_key(store)
    if not key or key not in (store.serverless.keys(name) or ()):
        return Reply(
            status=401,
            json={
                "error": {
                    "code": "401",
                    "message": "Access denied due to invalid subscription key or wrong API "
                    "endpoint. Make sure to provide a valid key for an active subscription and "
                    "use a correct regional API endpoint for your resource.",
                }
            },
            headers={"www-authenticate": "Bearer"},
        )
    state = body["properties"].get("provisioningState")
    if state != "Succeeded":
        return Reply(
            status=503, json={"error": {"code": "ServiceUnavailable", "message": f"{state}."}}
        )
    model_id = str(body["properties"]["modelSettings"]["modelId"])
    model = model_id.split("/models/", 1)[-1].split("/", 1)[0]
    return chat_completion_reply(
        store, req.json, endpoint=name, deployment=None, model=model, headers={}
    )


def _get(collection: str, label: str, find: Callable[[FakeStore, str], Any]) -> Handler:
    """GET of one ``collection`` resource: advances its operation, 404 when missing."""

    def handler(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
        bad = check_workspace(store, m)
        if bad is not None:
            return bad
        store.tick(f"{collection}/{m['name']}")
        body = find(store, m["name"])
        return not_found(label, m["name"]) if body is None else Reply(json=body)

    return handler


def _list(everything: Callable[[FakeStore], list[Any]]) -> Handler:
    """Paged list of a collection."""

    def handler(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
        bad = check_workspace(store, m)
        return bad if bad is not None else paged(store, req, everything(store))

    return handler


_endpoint_get = _get(
    "serverlessEndpoints", "Serverless endpoint", lambda st, n: st.serverless.get_endpoint(n)
)
_endpoint_list = _list(lambda st: st.serverless.list_endpoints())
_subscription_get = _get(
    "marketplaceSubscriptions",
    "Marketplace subscription",
    lambda st, n: st.serverless.get_subscription(n),
)
_subscription_list = _list(lambda st: st.serverless.list_subscriptions())


ROUTES = [
    route("serverless.list", "GET", WS + r"/serverlessEndpoints", _endpoint_list),
    route("serverless.get", "GET", _SE, _endpoint_get),
    route("serverless.create", "PUT", _SE, _endpoint_put),
    route("serverless.delete", "DELETE", _SE, _endpoint_delete),
    route("serverless.list_keys", "POST", _SE + r"/listKeys", _list_keys),
    route("serverless.regenerate_keys", "POST", _SE + r"/regenerateKeys", _regenerate_keys),
    route("marketplace.list", "GET", WS + r"/marketplaceSubscriptions", _subscription_list),
    route("marketplace.get", "GET", _MS, _subscription_get),
    route("marketplace.create", "PUT", _MS, _subscription_put),
    route("marketplace.delete", "DELETE", _MS, _subscription_delete),
    route("serverless.chat", "POST", _INFERENCE + r"(?:/v1)?/chat/completions", _chat),
]
