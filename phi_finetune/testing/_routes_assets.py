"""Datastores, blob storage, data assets and workspace models."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from phi_finetune.testing._http import FakeRequest, Reply, azure_error
from phi_finetune.testing._router import WS, not_found, paged, route, system_data
from phi_finetune.testing._routes_registry import created_system_data
from phi_finetune.testing._routes_workspace import check_workspace

if TYPE_CHECKING:
    from phi_finetune.testing._scope import FakeScope
    from phi_finetune.testing._store import AssetKind, FakeStore

__all__ = ["ROUTES", "datastore_body"]

_BLOB = r"(?P<account>[a-z0-9]+)\.blob\.core\.windows\.net/(?P<container>[^/]+)"
_STAMP = "Thu, 01 Jan 2026 00:00:00 GMT"


# ---------------------------------------------------------------------------- datastores


def datastore_body(scope: FakeScope, name: str = "workspaceblobstore") -> dict[str, Any]:
    return {
        "id": scope.arm_id(f"/datastores/{name}"),
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "datastoreType": "AzureBlob",
            "accountName": scope.storage_account,
            "containerName": scope.storage_container,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "isDefault": name == "workspaceblobstore",
            # as Datastore/get.json: the secrets object names its type, never the key
            "credentials": {
                "credentialsType": "AccountKey",
                "secrets": {"secretsType": "AccountKey"},
            },
            "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            "description": None,
            "tags": {},
            "properties": {},
        },
        "systemData": system_data(),
    }


_DATASTORES = ("workspaceblobstore", "workspaceartifactstore")


def _datastore_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    if m["name"] not in _DATASTORES:
        return not_found("Datastore", m["name"])
    return Reply(json=datastore_body(store.scope, m["name"]))


def _datastore_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    names = list(_DATASTORES)
    if req.query.get("isDefault", "").lower() == "true":
        names = names[:1]
    return Reply(json={"value": [datastore_body(store.scope, n) for n in names]})


def _datastore_secrets(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    key = base64.b64encode(b"fake-storage-account-key-0123456789").decode()
    return Reply(json={"secretsType": "AccountKey", "key": key})


# ---------------------------------------------------------------------------- blobs


def _blob_key(m: re.Match[str]) -> str:
    return f"{m['container']}/{unquote(m['path'])}"


def _blob_headers(store: FakeStore, key: str) -> dict[str, str]:
    content = store.get_blob(key) or b""
    headers = {
        "ETag": f'"0x{hashlib.md5(content).hexdigest()[:16].upper()}"',
        "Last-Modified": _STAMP,
        "x-ms-version": "2025-01-05",
        "x-ms-blob-type": "BlockBlob",
        "x-ms-creation-time": _STAMP,
        "x-ms-lease-status": "unlocked",
        "x-ms-lease-state": "available",
        "x-ms-server-encrypted": "true",
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    for meta_key, value in store.blob_metadata(key).items():
        headers[f"x-ms-meta-{meta_key}"] = value
    return headers


def _write_ack(store: FakeStore, key: str, content: bytes) -> Reply:
    headers = _blob_headers(store, key)
    headers["x-ms-request-server-encrypted"] = "true"
    headers["Content-MD5"] = base64.b64encode(hashlib.md5(content).digest()).decode()
    headers.pop("Content-Type", None)
    return Reply(status=201, body=b"", headers=headers)


def _metadata_from(req: FakeRequest) -> dict[str, str]:
    return {
        k.lower().removeprefix("x-ms-meta-"): v
        for k, v in req.headers.items()
        if k.lower().startswith("x-ms-meta-")
    }


def _blob_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    key = _blob_key(m)
    comp = req.query.get("comp")
    if comp == "block":
        store.stage_block(key, req.query.get("blockid", ""), req.body)
        return Reply(status=201, body=b"", headers={"x-ms-request-server-encrypted": "true"})
    if comp == "blocklist":
        ids = re.findall(r"<(?:Latest|Uncommitted|Committed)>([^<]*)</", req.text)
        content = store.commit_blocks(key, ids, _metadata_from(req))
        return _write_ack(store, key, content)
    if comp == "metadata":
        if store.get_blob(key) is None:
            return _blob_missing()
        store.set_blob_metadata(key, _metadata_from(req))
        return Reply(status=200, body=b"", headers=_blob_headers(store, key))
    if comp is not None:
        return Reply(status=200, body=b"", headers=_blob_headers(store, key))
    store.put_blob(key, req.body, _metadata_from(req))
    return _write_ack(store, key, req.body)


def _blob_missing() -> Reply:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound</Code>'
        b"<Message>The specified blob does not exist.</Message></Error>"
    )
    return Reply(
        status=404,
        body=body,
        headers={"x-ms-error-code": "BlobNotFound", "Content-Type": "application/xml"},
    )


def _blob_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    key = _blob_key(m)
    content = store.get_blob(key)
    if content is None:
        return _blob_missing()
    headers = _blob_headers(store, key)
    if req.method == "HEAD":
        headers["Content-Length"] = str(len(content))
        return Reply(status=200, body=b"", headers=headers)
    return Reply(status=200, body=content, headers=headers)


def _container_op(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    if req.query.get("comp") != "list":
        headers = {"ETag": '"0x1"', "Last-Modified": _STAMP, "x-ms-version": "2025-01-05"}
        return Reply(status=200, body=b"", headers=headers)
    container = m["container"]
    prefix = req.query.get("prefix", "")
    items = []
    for name, content in store.list_blobs(container, prefix):
        meta = "".join(
            f"<{escape(k)}>{escape(v)}</{escape(k)}>"
            for k, v in store.blob_metadata(f"{container}/{name}").items()
        )
        items.append(
            f"<Blob><Name>{escape(name)}</Name><Properties>"
            f"<Last-Modified>{_STAMP}</Last-Modified><Etag>0x1</Etag>"
            f"<Content-Length>{len(content)}</Content-Length>"
            f"<Content-Type>application/octet-stream</Content-Type>"
            f"<BlobType>BlockBlob</BlobType></Properties>"
            f"<Metadata>{meta}</Metadata></Blob>"
        )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<EnumerationResults ServiceEndpoint="https://{m["account"]}.blob.core.windows.net/" '
        f'ContainerName="{escape(container)}"><Prefix>{escape(prefix)}</Prefix>'
        f"<Blobs>{''.join(items)}</Blobs><NextMarker /></EnumerationResults>"
    )
    return Reply(
        status=200,
        body=xml.encode(),
        headers={"Content-Type": "application/xml", "x-ms-version": "2025-01-05"},
    )


# ---------------------------------------------------------------------------- versioned assets


def _kind(m: re.Match[str]) -> AssetKind:
    return "models" if m["kind"].lower() == "models" else "data"


def _uri_key(kind: str) -> str:
    return "modelUri" if kind == "models" else "dataUri"


def _version_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    name, version = m["name"], m["version"]
    sent = req.json if isinstance(req.json, dict) else {}
    props = sent.get("properties")
    if not isinstance(props, dict):
        return azure_error(400, "UserError", "The request body has no 'properties'.")
    existing = store.get_asset(kind, name, version)
    uri = _uri_key(kind)
    if kind == "models" and existing is None:
        refused = _job_output_problem(store, str(props.get(uri) or ""))
        if refused is not None:
            return refused
    if existing is not None:
        if existing["properties"].get(uri) != props.get(uri) or (
            existing["properties"].get("modelType") != props.get("modelType")
        ):
            label = "Model" if kind == "models" else "Data"
            return azure_error(
                409,
                "UserError",
                f"{label} {name}:{version} already exists with different content; "
                "versions are immutable. Use a new version.",
                details=[{"code": "Conflict", "message": "Asset version already exists."}],
            )
        for key in ("description", "tags"):
            if key in props:
                existing["properties"][key] = props[key]
        return Reply(json=existing)
    body = copy.deepcopy(sent)
    body["id"] = store.scope.arm_id(f"/{kind}/{name}/versions/{version}")
    body["name"] = version
    body["type"] = f"Microsoft.MachineLearningServices/workspaces/{kind}/versions"
    body["systemData"] = created_system_data(store)
    body["properties"].setdefault("isArchived", False)
    body["properties"].setdefault("isAnonymous", False)
    body["properties"].setdefault("tags", {})
    body["properties"].setdefault("properties", {})
    if kind == "models":
        body["properties"].setdefault("flavors", {})
        body["properties"]["provisioningState"] = "Succeeded"
    store.put_asset(kind, name, version, body)
    return Reply(status=201, json=body)


_JOB_OUTPUT = re.compile(r"azureml://jobs/(?P<job>[^/]+)/outputs/(?P<output>[^/]+)", re.I)


def _job_output_problem(store: FakeStore, model_uri: str) -> Reply | None:
    """A 400 when a model points at outputs of a job that does not exist or has not completed."""
    match = _JOB_OUTPUT.match(model_uri)
    if match is None or not store.check_job_outputs:
        return None
    job_name, output = match["job"], match["output"]
    job = store.get_job(job_name)
    if job is None:
        return azure_error(
            400,
            "UserError",
            f"Cannot register a model from {model_uri!r}: job {job_name!r} was not found in "
            f"workspace {store.scope.workspace_name!r}.",
            details=[{"code": "NotFound", "message": f"Job {job_name!r} not found."}],
        )
    if job.status != "Completed":
        return azure_error(
            400,
            "UserError",
            f"Cannot register a model from {model_uri!r}: job {job_name!r} is {job.status}; "
            "outputs are available once it has completed.",
        )
    outputs = job.body["properties"].get("outputs")
    if isinstance(outputs, dict) and outputs and output not in outputs:
        return azure_error(
            400,
            "UserError",
            f"Cannot register a model from {model_uri!r}: job {job_name!r} has no output "
            f"{output!r} (it has {', '.join(sorted(outputs))}).",
        )
    return None


def _version_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    body = store.get_asset(kind, m["name"], m["version"])
    if body is None:
        return not_found("Model" if kind == "models" else "Data", f"{m['name']}:{m['version']}")
    return Reply(json=body)


def _version_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    bodies = store.asset_versions(kind, m["name"])
    view = req.query.get("listViewType", "ActiveOnly").lower()
    if view == "activeonly":
        bodies = [b for b in bodies if not b["properties"].get("isArchived")]
    if req.query.get("$orderBy", "").lower().endswith("asc"):
        bodies.reverse()
    if req.query.get("$top"):
        bodies = bodies[: int(req.query["$top"])]
    return paged(store, req, bodies)


def _container_get(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    bodies = store.asset_versions(kind, m["name"])
    if not bodies:
        return not_found("Model" if kind == "models" else "Data", m["name"])
    return Reply(json=_container_body(store, kind, m["name"], bodies))


def _container_body(
    store: FakeStore, kind: AssetKind, name: str, bodies: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": store.scope.arm_id(f"/{kind}/{name}"),
        "name": name,
        "type": f"Microsoft.MachineLearningServices/workspaces/{kind}",
        "properties": {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "latestVersion": bodies[0]["name"] if bodies else None,
            "nextVersion": store.next_asset_version(kind, name),
            **({"dataType": bodies[0]["properties"].get("dataType")} if kind == "data" else {}),
        },
        "systemData": system_data(),
    }


def _container_list(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    value = [
        _container_body(store, kind, n, store.asset_versions(kind, n))
        for n in store.asset_names(kind)
    ]
    return paged(store, req, value)


def _container_put(store: FakeStore, req: FakeRequest, m: re.Match[str]) -> Reply:
    bad = check_workspace(store, m)
    if bad is not None:
        return bad
    kind = _kind(m)
    return Reply(
        json=_container_body(store, kind, m["name"], store.asset_versions(kind, m["name"]))
    )


_ASSET = WS + r"/(?P<kind>models|data)"
_VERSION = _ASSET + r"/(?P<name>[^/]+)/versions/(?P<version>[^/]+)"
ROUTES = [
    route("datastores.list", "GET", WS + r"/datastores", _datastore_list),
    route("datastores.get", "GET", WS + r"/datastores/(?P<name>[^/]+)", _datastore_get),
    route(
        "datastores.secrets",
        "POST",
        WS + r"/datastores/(?P<name>[^/]+)/listSecrets",
        _datastore_secrets,
    ),
    route("assets.list_containers", "GET", _ASSET, _container_list),
    route("assets.container", "GET", _ASSET + r"/(?P<name>[^/]+)", _container_get),
    route("assets.container_put", "PUT", _ASSET + r"/(?P<name>[^/]+)", _container_put),
    route("assets.list_versions", "GET", _ASSET + r"/(?P<name>[^/]+)/versions", _version_list),
    route("assets.version_get", "GET", _VERSION, _version_get),
    route("assets.version_put", "PUT", _VERSION, _version_put),
    route("blob.container", "GET", _BLOB, _container_op),
    route("blob.container_put", "PUT", _BLOB, _container_op),
    route("blob.put", "PUT", _BLOB + r"/(?P<path>.+)", _blob_put),
    route("blob.get", "GET", _BLOB + r"/(?P<path>.+)", _blob_get),
    route("blob.head", "HEAD", _BLOB + r"/(?P<path>.+)", _blob_get),
]
