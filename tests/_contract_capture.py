"""Which vendored definition a reply of the fake must follow, and a transport hook that keeps them.

Each route is matched by method and path; the definition is looked up in the vendored swagger of
the api-version the request carried (``tests/_contract.py`` ``BY_API_VERSION``). The workspace
route, whose swagger is not vendored, falls back to the definitions derived from azure-ai-ml
1.35.2; the registry data plane and registry discovery have files of their own. A
reply on a known route with no contract for its api-version is a problem, not a pass.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import _contract as contract

WS = r"/workspaces/[^/]+"
REG = r"/mferp/managementfrontend/.*/registries/[^/]+"
DERIVED = "derived"
REGISTRY = "registry"
DISCOVERY = "discovery"
# Keys of a registry model version beyond the derived 2021-10-01-dataplanepreview contract, with
# public evidence that the service sends them: azure-ai-ml 1.35.2 writes registry models with
# ``properties.system_metadata`` (``_restclient/model_dataplane/operations/_patch.py``) and the
# azureml-assets spec.yaml of the model publishes it; the camelCase spelling is the fake's knob.
REGISTRY_MODEL_EXTENSIONS = ("system_metadata", "systemMetadata")

# api-version -> vendored files whose definitions extend (and override) that version's
# mfe.<version>.json: serverless endpoints, marketplace subscriptions and fine-tuning jobs, read
# at a later commit of the same api-version folder (tests/data/contract/README.md)
SUPPLEMENTS: dict[str, tuple[str, ...]] = {
    "2024-01-01-preview": ("maas.2024-01-01-preview.json",),
    "2024-10-01-preview": ("finetuning.2024-10-01-preview.json",),
}

# (method, path pattern, where the contract lives, definition)
# where: an api-version file (swagger), DERIVED, REGISTRY or DISCOVERY
ROUTES: list[tuple[str, str, str, str]] = [
    ("GET", rf"{WS}$", DERIVED, "Workspace"),
    ("GET", rf"{WS}/datastores$", "swagger", "DatastoreResourceArmPaginatedResult"),
    ("GET", rf"{WS}/datastores/[^/]+$", "swagger", "DatastoreResource"),
    ("POST", rf"{WS}/datastores/[^/]+/listSecrets$", "swagger", "DatastoreSecrets"),
    ("PUT", rf"{WS}/jobs/[^/]+$", "swagger", "JobBaseResource"),
    ("GET", rf"{WS}/jobs/[^/]+$", "swagger", "JobBaseResource"),
    ("GET", rf"{WS}/jobs$", "swagger", "JobBaseResourceArmPaginatedResult"),
    ("PUT", rf"{WS}/models/[^/]+$", "swagger", "ModelContainerResource"),
    ("GET", rf"{WS}/models/[^/]+$", "swagger", "ModelContainerResource"),
    ("GET", rf"{WS}/models$", "swagger", "ModelContainerResourceArmPaginatedResult"),
    ("PUT", rf"{WS}/models/[^/]+/versions/[^/]+$", "swagger", "ModelVersionResource"),
    ("GET", rf"{WS}/models/[^/]+/versions/[^/]+$", "swagger", "ModelVersionResource"),
    ("GET", rf"{WS}/models/[^/]+/versions$", "swagger", "ModelVersionResourceArmPaginatedResult"),
    ("PUT", rf"{WS}/data/[^/]+/versions/[^/]+$", "swagger", "DataVersionBaseResource"),
    ("GET", rf"{WS}/data/[^/]+/versions/[^/]+$", "swagger", "DataVersionBaseResource"),
    ("GET", rf"{WS}/data/[^/]+/versions$", "swagger", "DataVersionBaseResourceArmPaginatedResult"),
    ("PUT", rf"{WS}/onlineEndpoints/[^/]+$", "swagger", "OnlineEndpointTrackedResource"),
    ("GET", rf"{WS}/onlineEndpoints/[^/]+$", "swagger", "OnlineEndpointTrackedResource"),
    (
        "GET",
        rf"{WS}/onlineEndpoints$",
        "swagger",
        "OnlineEndpointTrackedResourceArmPaginatedResult",
    ),
    ("POST", rf"{WS}/onlineEndpoints/[^/]+/listKeys$", "swagger", "EndpointAuthKeys"),
    (
        "PUT",
        rf"{WS}/onlineEndpoints/[^/]+/deployments/[^/]+$",
        "swagger",
        "OnlineDeploymentTrackedResource",
    ),
    (
        "GET",
        rf"{WS}/onlineEndpoints/[^/]+/deployments/[^/]+$",
        "swagger",
        "OnlineDeploymentTrackedResource",
    ),
    (
        "GET",
        rf"{WS}/onlineEndpoints/[^/]+/deployments$",
        "swagger",
        "OnlineDeploymentTrackedResourceArmPaginatedResult",
    ),
    ("GET", rf"{REG}/models/[^/]+/versions/[^/]+$", REGISTRY, "ModelVersionData"),
    ("GET", rf"{REG}/models/[^/]+/versions$", REGISTRY, "ModelVersionResourceArmPaginatedResult"),
    ("GET", rf"{REG}/models/[^/]+$", REGISTRY, "ModelContainerData"),
    ("GET", rf"{REG}/components/[^/]+/versions/[^/]+$", REGISTRY, "ComponentVersionData"),
    (
        "GET",
        rf"{REG}/components/[^/]+/versions$",
        REGISTRY,
        "ComponentVersionResourceArmPaginatedResult",
    ),
    (
        "GET",
        r"/registrymanagement/v1\.0/registries/[^/]+/discovery$",
        DISCOVERY,
        "RegistryDiscoveryDto",
    ),
    ("PUT", rf"{WS}/serverlessEndpoints/[^/]+$", "swagger", "ServerlessEndpointTrackedResource"),
    ("GET", rf"{WS}/serverlessEndpoints/[^/]+$", "swagger", "ServerlessEndpointTrackedResource"),
    (
        "GET",
        rf"{WS}/serverlessEndpoints$",
        "swagger",
        "ServerlessEndpointTrackedResourceArmPaginatedResult",
    ),
    ("POST", rf"{WS}/serverlessEndpoints/[^/]+/listKeys$", "swagger", "EndpointAuthKeys"),
    ("POST", rf"{WS}/serverlessEndpoints/[^/]+/regenerateKeys$", "swagger", "EndpointAuthKeys"),
    ("PUT", rf"{WS}/marketplaceSubscriptions/[^/]+$", "swagger", "MarketplaceSubscriptionResource"),
    ("GET", rf"{WS}/marketplaceSubscriptions/[^/]+$", "swagger", "MarketplaceSubscriptionResource"),
    (
        "GET",
        rf"{WS}/marketplaceSubscriptions$",
        "swagger",
        "MarketplaceSubscriptionResourceArmPaginatedResult",
    ),
]


@cache
def swagger_for(api_version: str) -> Path | None:
    """The vendored swagger of an api-version, with its supplements merged in (a file written
    once per process), ``None`` when that version is not vendored."""
    base = contract.BY_API_VERSION.get(api_version)
    extra = SUPPLEMENTS.get(api_version, ())
    if base is None or not extra:
        return base
    doc = json.loads(base.read_text(encoding="utf-8"))
    for name in extra:
        supplement = json.loads((contract.CONTRACT_DIR / name).read_text(encoding="utf-8"))
        doc["definitions"].update(supplement["definitions"])
        doc["_vendored"].setdefault("supplementedBy", []).append(name)
    merged = Path(tempfile.mkdtemp(prefix="phi-contract-")) / f"{base.stem}+supplements.json"
    merged.write_text(json.dumps(doc), encoding="utf-8")
    return merged


def route_of(method: str, path: str) -> tuple[str, str] | None:
    """``(where, definition)`` for a request, ``None`` when no route of the table matches."""
    for verb, pattern, where, name in ROUTES:
        if verb == method and re.search(pattern, path):
            return where, name
    return None


def contract_for(method: str, path: str, api_version: str | None) -> tuple[Path, str] | str:
    """``(vendored file, definition)`` a reply must follow, or why there is none (a problem)."""
    found = route_of(method, path)
    if found is None:
        return f"no route in the contract table for {method} {path}"
    where, name = found
    if where == DERIVED:
        return contract.ASSETS_SPEC_FILE, name
    if where == REGISTRY:
        if api_version != "2021-10-01-dataplanepreview":
            return f"registry data plane at api-version {api_version!r} is not vendored"
        return contract.REGISTRY_FILE, name
    if where == DISCOVERY:
        return contract.DISCOVERY_FILE, name
    source = swagger_for(api_version or "")
    if source is None:
        return f"{method} {path}: no swagger vendored for api-version {api_version!r}"
    if not contract.has_definition(name, source):
        return f"{source.name} does not vendor {name}"
    return source, name


class Captured:
    """Replies seen at the transport: ``(method, path, api-version, status, JSON body or None)``."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, str, str | None, int, Any]] = []

    def checked(self) -> list[tuple[str, str, str | None, str, Path]]:
        """``(method, path, api-version, definition, file)`` of every 2xx reply with a body."""
        out = []
        for method, path, api, status, body in self.replies:
            if status >= 300 or body is None:
                continue
            found = contract_for(method, path, api)
            if not isinstance(found, str):
                out.append((method, path, api, found[1], found[0]))
        return out

    def on(self, definition: str) -> list[tuple[str, str, str | None, Any]]:
        """The 2xx replies with a body whose contract is ``definition``."""
        found = []
        for method, path, api, status, body in self.replies:
            if status >= 300 or body is None:
                continue
            where = contract_for(method, path, api)
            if not isinstance(where, str) and where[1] == definition:
                found.append((method, path, api, body))
        return found

    def problems(self) -> list[str]:
        """Every way a captured 2xx reply breaks its contract (or has none)."""
        out: list[str] = []
        for method, path, api, status, body in self.replies:
            if status >= 300 or body is None:
                continue
            found = contract_for(method, path, api)
            if isinstance(found, str):
                out.append(found)
                continue
            source, name = found
            label = f"{method} {path} [{api}] ({source.name}: {name})"
            if source == contract.REGISTRY_FILE:
                body, bad = without_registry_extensions(body)
                out += [f"{label} {p}" for p in bad]
            out += [f"{label} {p}" for p in contract.errors(name, body, source)]
        return out


def without_registry_extensions(body: Any) -> tuple[Any, list[str]]:
    """``body`` less the documented extension keys of its model versions, and their problems."""
    problems: list[str] = []

    def strip(version: Any) -> Any:
        props = version.get("properties") if isinstance(version, dict) else None
        if not isinstance(props, dict):
            return version
        present = [k for k in REGISTRY_MODEL_EXTENSIONS if k in props]
        if len(present) > 1:
            problems.append(f"$.properties: both {present} sent; the fake serves one spelling")
        for key in present:
            if not isinstance(props[key], dict):
                problems.append(f"$.properties.{key}: {props[key]!r} is not an object")
        rest = {k: v for k, v in props.items() if k not in REGISTRY_MODEL_EXTENSIONS}
        return {**version, "properties": rest}

    if isinstance(body, dict) and isinstance(body.get("value"), list):
        return {**body, "value": [strip(v) for v in body["value"]]}, problems
    return strip(body), problems


@contextmanager
def capture() -> Iterator[Captured]:
    """Wrap the fake's patched ``RequestsTransport.send`` (active fake needed) to keep replies."""
    from azure.core.pipeline.transport import RequestsTransport

    seen = Captured()
    patched = RequestsTransport.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        response = patched(self, request, **kwargs)
        parts = urlsplit(request.url)
        if route_of(request.method, parts.path) is None:
            return response  # leave blob transfers and other streams alone
        if hasattr(response, "read"):  # a streamed reply keeps its bytes for the SDK after this
            response.read()
        text = response.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        api = dict(parse_qsl(parts.query)).get("api-version")
        seen.replies.append((request.method, parts.path, api, response.status_code, body))
        return response

    RequestsTransport.send = send  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        RequestsTransport.send = patched  # type: ignore[method-assign]
