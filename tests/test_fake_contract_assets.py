"""The fake's workspace, datastore, job, model, endpoint and deployment replies follow the contract.

Each flow is driven through the real SDK calls the library makes; every reply body the fake gives
on those routes is captured at azure-core's transport and validated against the vendored
definitions (``tests/data/contract/armMlService.azure-ai-ml-1.35.2.json``, see the README).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _contract as contract
import pytest

from phi_finetune.testing import FakeAzureML

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ASSETS = contract.ASSETS_SPEC_FILE
MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"
WS = r"/workspaces/[^/]+"

# (method, path pattern after the workspace, status) -> definition of the reply body
ROUTES: list[tuple[str, str, str]] = [
    ("GET", rf"{WS}$", "Workspace"),
    ("GET", rf"{WS}/datastores$", "DatastoreResourceArmPaginatedResult"),
    ("GET", rf"{WS}/datastores/[^/]+$", "Datastore"),
    ("POST", rf"{WS}/datastores/[^/]+/listSecrets$", "DatastoreSecrets"),
    ("PUT", rf"{WS}/jobs/[^/]+$", "JobBase"),
    ("GET", rf"{WS}/jobs/[^/]+$", "JobBase"),
    ("GET", rf"{WS}/jobs$", "JobBaseResourceArmPaginatedResult"),
    ("PUT", rf"{WS}/models/[^/]+$", "ModelContainer"),
    ("GET", rf"{WS}/models/[^/]+$", "ModelContainer"),
    ("PUT", rf"{WS}/models/[^/]+/versions/[^/]+$", "ModelVersion"),
    ("GET", rf"{WS}/models/[^/]+/versions/[^/]+$", "ModelVersion"),
    ("GET", rf"{WS}/models/[^/]+/versions$", "ModelVersionResourceArmPaginatedResult"),
    ("PUT", rf"{WS}/onlineEndpoints/[^/]+$", "OnlineEndpoint"),
    ("GET", rf"{WS}/onlineEndpoints/[^/]+$", "OnlineEndpoint"),
    ("GET", rf"{WS}/onlineEndpoints$", "OnlineEndpointTrackedResourceArmPaginatedResult"),
    ("POST", rf"{WS}/onlineEndpoints/[^/]+/listKeys$", "EndpointAuthKeys"),
    ("PUT", rf"{WS}/onlineEndpoints/[^/]+/deployments/[^/]+$", "OnlineDeployment"),
    ("GET", rf"{WS}/onlineEndpoints/[^/]+/deployments/[^/]+$", "OnlineDeployment"),
    (
        "GET",
        rf"{WS}/onlineEndpoints/[^/]+/deployments$",
        "OnlineDeploymentTrackedResourceArmPaginatedResult",
    ),
]


class Captured:
    """Replies seen at the transport: ``(method, path, status, JSON body or None)``."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, str, int, Any]] = []

    def on(self, definition: str) -> list[tuple[str, str, Any]]:
        """The 2xx replies with a body whose route the contract gives ``definition``."""
        found = []
        for method, path, status, body in self.replies:
            if status >= 300 or body is None:
                continue
            if _definition(method, path) == definition:
                found.append((method, path, body))
        return found

    def checked(self) -> list[tuple[str, str, str]]:
        """``(method, path, definition)`` of every reply this module validates."""
        out = []
        for method, path, status, body in self.replies:
            name = _definition(method, path)
            if name and status < 300 and body is not None:
                out.append((method, path, name))
        return out


def _definition(method: str, path: str) -> str | None:
    if "/providers/Microsoft.MachineLearningServices/" not in path:
        return None
    for verb, pattern, name in ROUTES:
        if verb == method and re.search(pattern, path):
            return name
    return None


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


@pytest.fixture
def captured(fake: FakeAzureML) -> Iterator[Captured]:
    """Wrap the fake's patched ``RequestsTransport.send`` to keep each reply body."""
    from urllib.parse import urlsplit

    from azure.core.pipeline.transport import RequestsTransport

    seen = Captured()
    patched = RequestsTransport.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        response = patched(self, request, **kwargs)
        path = urlsplit(request.url).path
        if _definition(request.method, path) is None:
            return response  # leave blob downloads and other streams alone
        if hasattr(response, "read"):  # a streamed reply keeps its bytes for the SDK after this
            response.read()
        text = response.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        seen.replies.append((request.method, path, response.status_code, body))
        return response

    RequestsTransport.send = send  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        RequestsTransport.send = patched  # type: ignore[method-assign]


def _problems(definition: str, body: Any) -> list[str]:
    return contract.errors(definition, body, ASSETS)


def _all_valid(captured: Captured, *definitions: str) -> None:
    problems = []
    for definition in definitions:
        replies = captured.on(definition)
        assert replies, f"no reply was validated against {definition}"
        for method, path, body in replies:
            problems += [f"{method} {path} ({definition}) {p}" for p in _problems(definition, body)]
    assert problems == [], "\n".join(problems)


def _raw(fake: FakeAzureML, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """``(status, JSON body)`` of one raw ARM request (with the bearer token the fake checks)."""
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    token = fake.credential().get_token("https://management.azure.com/.default").token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body) if body is not None else None
    response = RequestsTransport().send(HttpRequest(method, url, headers=headers, data=data))
    text = response.text()
    return response.status_code, json.loads(text) if text else None


def _pipeline_job(fake: FakeAzureML) -> Any:
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    component = fake.registry_client().components.get("chat_completion_pipeline", label="latest")

    @pipeline(name="phi-ft")  # type: ignore[misc]
    def build() -> dict[str, Any]:
        node = component(
            mlflow_model_path=MODEL_ID,
            compute_finetune="serverless",
            train_file_path=Input(type="uri_file", path="azureml:train:1"),
            number_of_gpu_to_use_finetuning=1,
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    return build()


def _model() -> Any:
    from azure.ai.ml.entities import Model

    return Model(
        name="phi-ft",
        version="1",
        path="azureml://jobs/job1/outputs/trained_model",
        type="mlflow_model",
    )


# ---------------------------------------------------------------------------- the vendored data


def test_vendored_asset_definitions_name_their_source() -> None:
    document = contract.spec(ASSETS)
    source = document["_vendored"]
    assert source["repository"] == "Azure/azure-sdk-for-python"
    assert source["license"].startswith("MIT")
    assert source["apiVersion"]
    names = set(document["definitions"])
    assert {name for _, _, name in ROUTES} <= names
    for name in {name for _, _, name in ROUTES}:  # each resolves under the strict converter
        assert _problems(name, {"id": 1}) != []


EXAMPLES = [
    ("Datastore_get", "Datastore"),
    ("Datastore_listSecrets", "DatastoreSecrets"),
    ("PipelineJob_get", "JobBase"),
    ("ModelVersion_get", "ModelVersion"),
    ("OnlineEndpoint_get", "OnlineEndpoint"),
    ("OnlineDeployment_get_Managed", "OnlineDeployment"),
]


@pytest.mark.parametrize(("name", "definition"), EXAMPLES)
def test_published_examples_validate_against_the_derived_definitions(
    name: str, definition: str
) -> None:
    """The specification's own examples (on the api-versions the SDK sends) pass the schema."""
    data = contract.example(name)
    source = data["_vendored"]
    assert source["repository"] == "Azure/azure-rest-api-specs"
    assert f"/{source['apiVersion']}/examples/" in source["path"]
    assert data["parameters"]["api-version"] == source["apiVersion"]
    assert source["license"].startswith("MIT")
    assert _problems(definition, data["responses"]["200"]["body"]) == []


def test_sdk_reads_the_published_endpoint_and_deployment_examples(fake: FakeAzureML) -> None:
    endpoint = contract.example("OnlineEndpoint_get")["responses"]["200"]["body"]
    deployment = contract.example("OnlineDeployment_get_Managed")["responses"]["200"]["body"]
    # the SDK parses the ARM id; the example's placeholder "string" is no id
    deployment["id"] = (
        f"{fake.workspace_id}/onlineEndpoints/testEndpointName/deployments/testDeploymentName"
    )
    deployment["name"] = "testDeploymentName"
    fake.inject_fault(
        "GET", r"/onlineEndpoints/testEndpointName\?", status=200, body=endpoint, times=None
    )
    fake.inject_fault("GET", r"/deployments/testDeploymentName\?", status=200, body=deployment)
    listing = {"value": [deployment]}  # get() also lists the endpoint's deployments
    fake.inject_fault("GET", r"/testEndpointName/deployments\?", status=200, body=listing)
    ml = fake.workspace_client()
    got = ml.online_endpoints.get("testEndpointName")
    assert (got.auth_mode, got.provisioning_state) == ("aml_token", "Creating")
    assert got.traffic["string"] == 1
    dep = ml.online_deployments.get("testDeploymentName", endpoint_name="testEndpointName")
    assert dep.liveness_probe.initial_delay == 300
    assert dep.provisioning_state == "Creating"


def test_the_asset_validator_rejects_unknown_keys_wrong_enums_and_missing_required() -> None:
    body: dict[str, Any] = {
        "id": "/x",
        "name": "ep",
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": "eastus",
        "properties": {"authMode": "Key", "provisioningState": "Done", "scoringUrl": "x"},
    }
    text = "\n".join(_problems("OnlineEndpoint", body))
    assert "'scoringUrl' was unexpected" in text
    assert "$.properties.provisioningState: 'Done' is not valid" in text
    assert _problems("OnlineEndpoint", {**body, "properties": {"authMode": "Key"}}) == []
    deployment = {"location": "eastus", "properties": {"endpointComputeType": "Managed"}}
    assert _problems("OnlineDeployment", deployment) == []
    del deployment["properties"]
    assert "'properties' is a required property" in "\n".join(
        _problems("OnlineDeployment", deployment)
    )
    job = {"properties": {"jobType": "Pipeline", "status": "Done"}}
    assert "$.properties.status: 'Done' is not valid" in "\n".join(_problems("JobBase", job))


def test_derived_definitions_are_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-deriving from the installed azure-ai-ml gives the vendored file (no hand edits)."""
    import importlib.util

    script = contract.CONTRACT_DIR / "derive_arm_ml_service.py"
    spec = importlib.util.spec_from_file_location("derive_arm_ml_service", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path / "out.json")
    module.main()
    fresh = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert fresh["definitions"] == contract.spec(ASSETS)["definitions"]


# ---------------------------------------------------------------------------- the SDK flows


def test_workspace_and_default_datastore_replies_validate(
    fake: FakeAzureML, captured: Captured
) -> None:
    ml = fake.workspace_client()
    workspace = ml.workspaces.get(fake.workspace_name)
    assert workspace.name == fake.workspace_name
    store = ml.datastores.get_default(include_secrets=True)
    assert store.name == "workspaceblobstore"
    assert ml.datastores.get("workspaceblobstore", include_secrets=True).name == store.name
    list(ml.datastores.list())
    _all_valid(captured, "Workspace", "Datastore", "DatastoreResourceArmPaginatedResult")
    secrets = captured.on("DatastoreSecrets")
    assert secrets, "get_default(include_secrets=True) asked for no secrets"
    _all_valid(captured, "DatastoreSecrets")


def test_pipeline_job_create_get_and_list_replies_validate(
    fake: FakeAzureML, captured: Captured
) -> None:
    ml = fake.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake), experiment_name="contract")
    assert ml.jobs.get(job.name).name == job.name
    assert job.name in [j.name for j in ml.jobs.list()]
    _all_valid(captured, "JobBase", "JobBaseResourceArmPaginatedResult")
    methods = {method for method, _, _ in captured.on("JobBase")}
    assert methods == {"PUT", "GET"}
    for _, _, body in captured.on("JobBase"):
        assert body["properties"]["jobType"] == "Pipeline"  # checked against PipelineJob


def test_model_create_get_and_list_replies_validate(fake: FakeAzureML, captured: Captured) -> None:
    ml = fake.workspace_client()
    created = ml.models.create_or_update(_model())
    assert created.version == "1"
    assert ml.models.get("phi-ft", version="1").version == "1"
    assert [m.version for m in ml.models.list("phi-ft")] == ["1"]
    _all_valid(captured, "ModelVersion", "ModelVersionResourceArmPaginatedResult")
    # azure-ai-ml never reads the container routes: ask them directly
    base = f"https://management.azure.com{fake.workspace_id}/models"
    query = "?api-version=2023-08-01-preview"
    status, container = _raw(fake, "GET", f"{base}/phi-ft{query}")
    assert status == 200
    assert _problems("ModelContainer", container) == []
    status, listing = _raw(fake, "GET", base + query)
    assert status == 200 and listing["value"]
    assert _problems("ModelContainerResourceArmPaginatedResult", listing) == []
    status, put = _raw(fake, "PUT", f"{base}/other{query}", {"properties": {"description": "x"}})
    assert status in (200, 201)
    assert _problems("ModelContainer", put) == []


def test_endpoint_create_get_keys_and_list_replies_validate(
    fake: FakeAzureML, captured: Captured
) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml = fake.workspace_client()
    ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="ep-contract", auth_mode="key")
    ).result()
    assert ml.online_endpoints.get("ep-contract").name == "ep-contract"
    keys = ml.online_endpoints.get_keys("ep-contract")
    assert keys.primary_key
    assert "ep-contract" in [e.name for e in ml.online_endpoints.list()]
    _all_valid(
        captured,
        "OnlineEndpoint",
        "EndpointAuthKeys",
        "OnlineEndpointTrackedResourceArmPaginatedResult",
    )
    assert {m for m, _, _ in captured.on("OnlineEndpoint")} == {"PUT", "GET"}


def test_deployment_create_get_and_list_replies_validate(
    fake: FakeAzureML, captured: Captured
) -> None:
    from azure.ai.ml.entities import (
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineRequestSettings,
        ProbeSettings,
    )

    ml = fake.workspace_client()
    ml.models.create_or_update(_model())
    ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="ep-contract", auth_mode="key")
    ).result()
    deployment = ManagedOnlineDeployment(
        name="demo",
        endpoint_name="ep-contract",
        model="azureml:phi-ft:1",
        instance_type="Standard_NC6s_v3",
        instance_count=1,
        liveness_probe=ProbeSettings(initial_delay=600),
        request_settings=OnlineRequestSettings(request_timeout_ms=90000),
    )
    result = ml.online_deployments.begin_create_or_update(deployment).result()
    assert result.provisioning_state == "Succeeded"
    assert ml.online_deployments.get("demo", endpoint_name="ep-contract").name == "demo"
    assert [d.name for d in ml.online_deployments.list("ep-contract")] == ["demo"]
    _all_valid(captured, "OnlineDeployment", "OnlineDeploymentTrackedResourceArmPaginatedResult")
    for _, _, body in captured.on("OnlineDeployment"):
        assert body["properties"]["endpointComputeType"] == "Managed"


def test_list_bodies_validate_with_a_next_link(fake: FakeAzureML, captured: Captured) -> None:
    ml = fake.workspace_client()
    ml.models.create_or_update(_model())
    list(ml.models.list("phi-ft"))
    replies = captured.on("ModelVersionResourceArmPaginatedResult")
    assert replies
    body = replies[0][2]
    paged = copy.deepcopy(body)
    paged["nextLink"] = "https://management.azure.com/next?api-version=2023-08-01-preview"
    assert _problems("ModelVersionResourceArmPaginatedResult", paged) == []
    paged["next_link"] = paged.pop("nextLink")
    assert _problems("ModelVersionResourceArmPaginatedResult", paged) != []
