"""Registry discovery and registry (data-plane) model and component versions.

System metadata of a model version travels under ``properties.system_metadata`` by default:
the one wire spelling with public evidence is azure-ai-ml 1.35.2's own registry write
(``_restclient/model_dataplane/operations/_patch.py`` puts it under the snake_case
``properties.system_metadata`` key), and the SDK's read models map neither spelling onto the
entity. ``FakeAzureML.set_system_metadata_key("systemMetadata")`` serves the camelCase spelling
of the other ARM properties instead, so library code can be tested against both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import REG, not_found, route, system_data

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore, RegistryKind

__all__ = [
    "ROUTES",
    "SYSTEM_METADATA_KEYS",
    "created_system_data",
    "registry_component_body",
    "registry_model_body",
    "wire_model_body",
]

SYSTEM_METADATA_KEYS = ("system_metadata", "systemMetadata")


def created_system_data(store: FakeStore) -> dict[str, Any]:
    """System data whose ``createdAt`` grows with every asset (``latest`` = newest created)."""
    n = store.next_id()
    stamp = f"2026-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000+00:00"
    data = system_data()
    data["createdAt"] = stamp
    data["lastModifiedAt"] = stamp
    return data


def registry_model_body(
    store: FakeStore,
    registry: str,
    name: str,
    version: str,
    *,
    tags: dict[str, str],
    system_metadata: dict[str, Any],
    archived: bool,
    description: str | None,
    properties: dict[str, str],
    model_type: str,
    labels: list[str],
) -> dict[str, Any]:
    asset_id = f"azureml://registries/{registry}/models/{name}/versions/{version}"
    props: dict[str, Any] = {
        "description": description,
        "tags": tags,
        "properties": properties,
        "isAnonymous": False,
        "isArchived": archived,
        "flavors": {"python_function": {"data": {"loader_module": "mlflow.transformers"}}},
        "modelType": model_type,
        "modelUri": asset_id,
        "jobName": None,
    }
    # The registry data plane (2021-10-01-dataplanepreview) defines neither ``stage`` nor
    # ``labels`` on a model version (tests/data/contract/mfe.2021-10-01-dataplanepreview.json):
    # ``labels`` only steer the fake's label lookup. System metadata is the one key beyond that
    # contract.
    del labels
    if system_metadata:
        props["system_metadata"] = system_metadata
    return {
        "id": asset_id,
        "name": version,
        "type": "Microsoft.MachineLearningServices/registries/models/versions",
        "properties": props,
        "systemData": created_system_data(store),
    }


def wire_model_body(store: FakeStore, body: dict[str, Any]) -> dict[str, Any]:
    """A stored model version as sent: system metadata under the scope's chosen key."""
    props = body.get("properties") or {}
    found = [k for k in SYSTEM_METADATA_KEYS if k in props]
    wanted = store.scope.system_metadata_key
    if not found or found == [wanted]:
        return body
    props = {k: v for k, v in props.items() if k not in SYSTEM_METADATA_KEYS}
    props[wanted] = body["properties"][found[0]]
    return {**body, "properties": props}


def _wire(store: FakeStore, kind: RegistryKind, body: dict[str, Any]) -> dict[str, Any]:
    return wire_model_body(store, body) if kind == "models" else body


def registry_component_body(
    store: FakeStore,
    registry: str,
    name: str,
    version: str,
    *,
    inputs: dict[str, dict[str, Any]],
    outputs: dict[str, dict[str, Any]],
    component_type: str,
    display_name: str | None,
    archived: bool,
) -> dict[str, Any]:
    asset_id = f"azureml://registries/{registry}/components/{name}/versions/{version}"
    spec: dict[str, Any] = {
        "$schema": f"https://azuremlschemas.azureedge.net/latest/{component_type}Component.schema.json",
        "name": name,
        "version": version,
        "type": component_type,
        "display_name": display_name or name,
        "description": f"{display_name or name} (served by FakeAzureML)",
        "is_deterministic": True,
        "inputs": inputs,
        "outputs": outputs,
    }
    if component_type == "pipeline":
        spec["jobs"] = {}
    else:
        spec["command"] = "echo fake"
        spec["environment"] = "azureml://registries/azureml/environments/fake-env/versions/1"
    return {
        "id": asset_id,
        "name": version,
        "type": "Microsoft.MachineLearningServices/registries/components/versions",
        "properties": {
            "componentSpec": spec,
            "description": spec["description"],
            "tags": {},
            "properties": {},
            "isAnonymous": False,
            "isArchived": archived,
        },
        "systemData": created_system_data(store),
    }


def _discovery(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    registry = m["reg"]
    if not store.has_registry(registry):
        return azure_error(404, "NotFound", f"Registry {registry!r} was not found.")
    scope = store.scope
    return Reply(
        json={
            "registryName": registry,
            "tenantId": "00000000-0000-0000-0000-0000000000aa",
            "primaryRegion": scope.location,
            "regions": [scope.location],
            "subscriptionId": scope.registry_subscription_id,
            "resourceGroup": scope.registry_resource_group,
            # no workspaceName: a registry has none, and the v1.0 swagger types it a string
            "primaryRegionResourceProviderUri": scope.api_url,
        }
    )


def _kind(m: re.Match[str]) -> RegistryKind:
    return "models" if m["kind"].lower() == "models" else "components"


def _registry_check(store: FakeStore, m: re.Match[str]) -> Reply | None:
    if not store.has_registry(m["reg"]):
        return azure_error(404, "NotFound", f"Registry {m['reg']!r} was not found.")
    return None


def _version_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = _registry_check(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    body = store.get_registry_asset(kind, m["reg"], m["name"], m["version"])
    if body is None:
        label = "Model" if kind == "models" else "Component"
        return not_found(label, f"{m['name']}:{m['version']}")
    return Reply(json=_wire(store, kind, body))


def _version_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = _registry_check(store, m)
    if bad is not None:
        return bad
    view = req.query.get("listViewType", "ActiveOnly").lower()
    kind = _kind(m)
    bodies = [_wire(store, kind, b) for b in store.registry_versions(kind, m["reg"], m["name"])]
    if view == "activeonly":
        bodies = [b for b in bodies if not b["properties"].get("isArchived")]
    elif view == "archivedonly":
        bodies = [b for b in bodies if b["properties"].get("isArchived")]
    if req.query.get("$orderBy", "").lower().endswith("asc"):
        bodies.reverse()
    top = req.query.get("$top")
    if top:
        bodies = bodies[: int(top)]
    return Reply(json={"value": bodies})


def _container_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = _registry_check(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    bodies = store.registry_versions(kind, m["reg"], m["name"])
    if not bodies:
        return not_found("Model" if kind == "models" else "Component", m["name"])
    active = [b for b in bodies if not b["properties"].get("isArchived")]
    latest = (active or bodies)[0]
    return Reply(
        json={
            "id": f"azureml://registries/{m['reg']}/{kind}/{m['name']}",
            "name": m["name"],
            "type": f"Microsoft.MachineLearningServices/registries/{kind}",
            "properties": {
                "description": None,
                "tags": {},
                "properties": {},
                "isArchived": not active,
                "latestVersion": latest["name"],
                "nextVersion": None,
            },
            "systemData": system_data(),
        }
    )


_KIND = r"/(?P<kind>models|components)/(?P<name>[^/]+)"
_VERSION = r"/versions/(?P<version>[^/]+)"
ROUTES = [
    route(
        "registry.discovery",
        "GET",
        r"[a-z0-9-]+\.api\.azureml\.ms/registrymanagement/v1\.0/registries/(?P<reg>[^/]+)/discovery",
        _discovery,
    ),
    route("registry.version.get", "GET", REG + _KIND + _VERSION, _version_get),
    route("registry.version.list", "GET", REG + _KIND + r"/versions", _version_list),
    route("registry.container.get", "GET", REG + _KIND, _container_get),
]
