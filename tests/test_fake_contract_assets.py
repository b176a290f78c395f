"""The fake's workspace, job, model, data, endpoint and deployment replies follow the contract.

Each flow is driven through the real SDK calls the library makes; every reply body the fake gives
on those routes is captured at azure-core's transport and validated against the vendored swagger
of the api-version the request carried (``tests/data/contract/mfe.<api-version>.json``; the
workspace GET against ``workspaceRP.<api-version>.json``). See the README there.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _contract as contract
import pytest
from _contract_capture import ROUTES, Captured, capture, contract_for

from phi_finetune.testing import FakeAzureML

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ASSETS = contract.ASSETS_SPEC_FILE
MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_completed_job("job1")  # the models below come from its output
        yield service


@pytest.fixture
def captured(fake: FakeAzureML) -> Iterator[Captured]:
    with capture() as seen:
        yield seen


def _problems(definition: str, body: Any, source: Path = ASSETS) -> list[str]:
    return contract.errors(definition, body, source)


def _all_valid(captured: Captured, *definitions: str) -> None:
    for definition in definitions:
        assert captured.on(definition), f"no reply was validated against {definition}"
    problems = captured.problems()
    assert problems == [], "\n".join(problems)


def _versions(captured: Captured, definition: str) -> set[str | None]:
    return {api for _, _, api, _ in captured.on(definition)}


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

SWAGGER_VERSIONS = sorted(contract.BY_API_VERSION)


@pytest.mark.parametrize("version", SWAGGER_VERSIONS)
def test_vendored_swagger_names_its_source_per_definition(version: str) -> None:
    document = contract.spec(contract.BY_API_VERSION[version])
    source = document["_vendored"]
    assert source["repository"] == "Azure/azure-rest-api-specs"
    assert source["apiVersion"] == version
    assert source["license"].startswith("MIT")
    mfe = next(path for path in source["sources"] if path.endswith(f"/{version}/mfe.json"))
    assert len(source["sources"][mfe]["commit"]) == 40
    assert set(source["definitionSource"]) == set(document["definitions"])
    assert set(source["definitionSource"].values()) <= set(source["sources"])
    for stub in source["stubs"]:  # a stub rejects every value: nothing is let through unread
        assert _problems(stub, {}, contract.BY_API_VERSION[version]) != []


def test_every_swagger_route_has_its_definition_in_each_version_the_sdk_sends() -> None:
    # api-versions azure-ai-ml 1.35.2 sends per route (the fake's request log, README)
    sent = {
        "JobBaseResource": ["2024-01-01-preview"],
        "DatastoreResource": ["2024-10-01-preview"],
        "DatastoreSecrets": ["2024-10-01-preview"],
        "DatastoreResourceArmPaginatedResult": ["2024-10-01-preview"],
        "ModelVersionResource": ["2023-08-01-preview"],
        "ModelContainerResource": ["2023-08-01-preview"],
        "DataVersionBaseResource": ["2023-04-01-preview"],
        "OnlineEndpointTrackedResource": ["2022-02-01-preview", "2023-04-01-preview"],
        "EndpointAuthKeys": ["2022-02-01-preview"],
        "OnlineDeploymentTrackedResource": ["2023-04-01-preview"],
        "OnlineDeploymentTrackedResourceArmPaginatedResult": [
            "2022-02-01-preview",
            "2023-04-01-preview",
        ],
    }
    swagger_routes = {name for _, _, where, name in ROUTES if where == "swagger"}
    assert set(sent) <= swagger_routes
    for name, versions in sent.items():
        for version in versions:
            source = contract.BY_API_VERSION[version]
            assert contract.has_definition(name, source), (name, version)
            assert _problems(name, {"id": 1}, source) != []  # resolves under the strict converter


def test_no_route_is_checked_against_derived_definitions() -> None:
    """Every ARM route follows a transcribed swagger; only the registry data plane is derived."""
    document = contract.spec(ASSETS)
    assert document["_vendored"]["repository"] == "Azure/azure-sdk-for-python"
    wheres = {where for _, _, where, _ in ROUTES}
    assert wheres == {"swagger", "workspace", "compute", "registry", "discovery"}
    workspace = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices"
    workspace += "/workspaces/w"
    for version in ("2023-08-01-preview", "2024-10-01-preview"):
        found = contract_for("GET", workspace, version)
        assert found == (contract.WORKSPACE_BY_API_VERSION[version], "Workspace"), found
        assert found[0].name == f"workspaceRP.{version}.json"


def test_a_route_at_an_api_version_without_vendored_swagger_is_a_problem() -> None:
    path = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices"
    path += "/workspaces/w/onlineEndpoints/ep"
    assert not isinstance(contract_for("GET", path, "2022-02-01-preview"), str)
    why = contract_for("GET", path, "2099-01-01-preview")
    assert isinstance(why, str) and "no swagger vendored" in why


# (example, definition, vendored file the example's api-version selects)
EXAMPLES = [
    ("Datastore_get", "DatastoreResource", None),
    ("Datastore_listSecrets", "DatastoreSecrets", None),
    ("PipelineJob_get", "JobBaseResource", None),
    ("ModelVersion_get", "ModelVersionResource", None),
    ("OnlineEndpoint_get", "OnlineEndpointTrackedResource", None),
    ("OnlineDeployment_get_Managed", "OnlineDeploymentTrackedResource", None),
]


@pytest.mark.parametrize(("name", "definition", "source"), EXAMPLES)
def test_published_examples_validate_against_the_vendored_definitions(
    name: str, definition: str, source: Path | None
) -> None:
    """The specification's own examples validate against the swagger of their api-version."""
    data = contract.example(name)
    vendored = data["_vendored"]
    assert vendored["repository"] == "Azure/azure-rest-api-specs"
    assert f"/{vendored['apiVersion']}/examples/" in vendored["path"]
    assert data["parameters"]["api-version"] == vendored["apiVersion"]
    assert vendored["license"].startswith("MIT")
    target = source or contract.BY_API_VERSION[vendored["apiVersion"]]
    assert _problems(definition, data["responses"]["200"]["body"], target) == []


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


def test_the_swagger_validator_rejects_unknown_keys_wrong_enums_and_missing_required() -> None:
    v2022 = contract.BY_API_VERSION["2022-02-01-preview"]
    v2023 = contract.BY_API_VERSION["2023-04-01-preview"]
    body: dict[str, Any] = {
        "id": "/x",
        "name": "ep",
        "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": "eastus",
        "properties": {"authMode": "Key", "provisioningState": "Done", "scoringUrl": "x"},
    }
    text = "\n".join(_problems("OnlineEndpointTrackedResource", body, v2023))
    assert "'scoringUrl' was unexpected" in text
    assert "$.properties.provisioningState: 'Done' is not one of" in text
    minimal = {**body, "properties": {"authMode": "Key"}}
    assert _problems("OnlineEndpointTrackedResource", minimal, v2023) == []
    # publicNetworkAccess came with a later api-version than 2022-02-01-preview
    newer = {**body, "properties": {"authMode": "Key", "publicNetworkAccess": "Enabled"}}
    assert _problems("OnlineEndpointTrackedResource", newer, v2023) == []
    assert "'publicNetworkAccess' was unexpected" in "\n".join(
        _problems("OnlineEndpointTrackedResource", newer, v2022)
    )
    deployment = {"location": "eastus", "properties": {"endpointComputeType": "Managed"}}
    assert _problems("OnlineDeploymentTrackedResource", deployment, v2023) == []
    del deployment["properties"]
    assert "'properties' is a required property" in "\n".join(
        _problems("OnlineDeploymentTrackedResource", deployment, v2023)
    )
    job = {"properties": {"jobType": "Pipeline", "status": "Done"}}
    v2024 = contract.BY_API_VERSION["2024-01-01-preview"]
    assert "$.properties.status: 'Done' is not one of" in "\n".join(
        _problems("JobBaseResource", job, v2024)
    )
    identity = {"properties": {"jobType": "Pipeline", "identity": {"identityType": "AMLToken"}}}
    assert _problems("JobBaseResource", identity, v2024) == []  # IdentityConfiguration: AmlToken
    identity["properties"]["identity"] = {"identityType": "AMLToken", "clientId": "x"}
    assert "'clientId' was unexpected" in "\n".join(_problems("JobBaseResource", identity, v2024))


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
    _all_valid(
        captured,
        "Workspace",
        "DatastoreResource",
        "DatastoreResourceArmPaginatedResult",
        "DatastoreSecrets",
    )
    assert _versions(captured, "DatastoreResource") == {"2024-10-01-preview"}


def test_pipeline_job_create_get_and_list_replies_validate(
    fake: FakeAzureML, captured: Captured
) -> None:
    ml = fake.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake), experiment_name="contract")
    assert ml.jobs.get(job.name).name == job.name
    assert job.name in [j.name for j in ml.jobs.list()]
    _all_valid(captured, "JobBaseResource", "JobBaseResourceArmPaginatedResult")
    assert _versions(captured, "JobBaseResource") == {"2024-01-01-preview"}
    methods = {method for method, _, _, _ in captured.on("JobBaseResource")}
    assert methods == {"PUT", "GET"}
    for _, _, _, body in captured.on("JobBaseResource"):
        assert body["properties"]["jobType"] == "Pipeline"  # checked against PipelineJob


def test_model_create_get_and_list_replies_validate(fake: FakeAzureML, captured: Captured) -> None:
    ml = fake.workspace_client()
    created = ml.models.create_or_update(_model())
    assert created.version == "1"
    assert ml.models.get("phi-ft", version="1").version == "1"
    assert [m.version for m in ml.models.list("phi-ft")] == ["1"]
    _all_valid(captured, "ModelVersionResource", "ModelVersionResourceArmPaginatedResult")
    assert _versions(captured, "ModelVersionResource") == {"2023-08-01-preview"}
    # azure-ai-ml never reads the container routes: ask them directly
    v2023 = contract.BY_API_VERSION["2023-08-01-preview"]
    base = f"https://management.azure.com{fake.workspace_id}/models"
    query = "?api-version=2023-08-01-preview"
    status, container = _raw(fake, "GET", f"{base}/phi-ft{query}")
    assert status == 200
    assert _problems("ModelContainerResource", container, v2023) == []
    status, listing = _raw(fake, "GET", base + query)
    assert status == 200 and listing["value"]
    assert _problems("ModelContainerResourceArmPaginatedResult", listing, v2023) == []
    status, put = _raw(fake, "PUT", f"{base}/other{query}", {"properties": {"description": "x"}})
    assert status in (200, 201)
    assert _problems("ModelContainerResource", put, v2023) == []


def test_data_version_create_and_get_replies_validate(
    fake: FakeAzureML, captured: Captured, tmp_path: Path
) -> None:
    from azure.ai.ml.entities import Data

    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": []}\n', encoding="utf-8")
    ml = fake.workspace_client()
    ml.data.create_or_update(Data(name="train", version="1", path=str(train), type="uri_file"))
    assert ml.data.get("train", version="1").version == "1"
    _all_valid(captured, "DataVersionBaseResource")
    assert _versions(captured, "DataVersionBaseResource") == {"2023-04-01-preview"}


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
        "OnlineEndpointTrackedResource",
        "EndpointAuthKeys",
        "OnlineEndpointTrackedResourceArmPaginatedResult",
    )
    assert {m for m, _, _, _ in captured.on("OnlineEndpointTrackedResource")} == {"PUT", "GET"}
    assert "2022-02-01-preview" in _versions(captured, "OnlineEndpointTrackedResource")


def test_endpoint_reply_carries_only_the_fields_of_the_api_version_asked(
    fake: FakeAzureML,
) -> None:
    """publicNetworkAccess is in the 2023-04-01-preview contract, not in 2022-02-01-preview."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    fake.workspace_client().online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="ep-versions", auth_mode="key")
    ).result()
    url = f"https://management.azure.com{fake.workspace_id}/onlineEndpoints/ep-versions"
    for version in ("2022-02-01-preview", "2023-04-01-preview"):
        status, body = _raw(fake, "GET", f"{url}?api-version={version}")
        assert status == 200
        source = contract.BY_API_VERSION[version]
        assert _problems("OnlineEndpointTrackedResource", body, source) == [], version
    _, old = _raw(fake, "GET", f"{url}?api-version=2022-02-01-preview")
    _, new = _raw(fake, "GET", f"{url}?api-version=2023-04-01-preview")
    assert "publicNetworkAccess" not in old["properties"]
    assert new["properties"]["publicNetworkAccess"] == "Enabled"


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
    ml.online_endpoints.get("ep-contract")  # lists the deployments at 2022-02-01-preview
    _all_valid(
        captured,
        "OnlineDeploymentTrackedResource",
        "OnlineDeploymentTrackedResourceArmPaginatedResult",
    )
    assert _versions(captured, "OnlineDeploymentTrackedResourceArmPaginatedResult") == {
        "2022-02-01-preview",
        "2023-04-01-preview",
    }
    for _, _, _, body in captured.on("OnlineDeploymentTrackedResource"):
        assert body["properties"]["endpointComputeType"] == "Managed"


def test_list_bodies_validate_with_a_next_link(fake: FakeAzureML, captured: Captured) -> None:
    ml = fake.workspace_client()
    ml.models.create_or_update(_model())
    list(ml.models.list("phi-ft"))
    replies = captured.on("ModelVersionResourceArmPaginatedResult")
    assert replies
    body = replies[0][3]
    v2023 = contract.BY_API_VERSION["2023-08-01-preview"]
    paged = copy.deepcopy(body)
    paged["nextLink"] = "https://management.azure.com/next?api-version=2023-08-01-preview"
    assert _problems("ModelVersionResourceArmPaginatedResult", paged, v2023) == []
    paged["next_link"] = paged.pop("nextLink")
    assert _problems("ModelVersionResourceArmPaginatedResult", paged, v2023) != []


def test_the_library_flow_replies_all_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reply of the library's whole flow (plan to delete) on a contract route validates."""
    import contextlib
    import importlib.util
    import sys

    bench_path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_request_count.py"
    spec = importlib.util.spec_from_file_location("bench_request_count_contract", bench_path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    # the flow starts its own fake: hook in after it patches the transport, leave before it stops
    stack = contextlib.ExitStack()
    seen: list[Captured] = []
    enter, leave = FakeAzureML.__enter__, FakeAzureML.__exit__

    def entered(self: FakeAzureML) -> FakeAzureML:
        result = enter(self)
        seen.append(stack.enter_context(capture()))
        return result

    def left(self: FakeAzureML, *args: Any) -> None:
        stack.close()
        leave(self, *args)

    monkeypatch.setattr(FakeAzureML, "__enter__", entered)
    monkeypatch.setattr(FakeAzureML, "__exit__", left)
    bench.library_flow()
    (captured,) = seen
    checked = captured.checked()
    routes = {definition for _, _, _, definition, _ in checked}
    assert {
        "Workspace",
        "JobBaseResource",
        "DataVersionBaseResource",
        "ModelVersionResource",
        "OnlineEndpointTrackedResource",
        "OnlineDeploymentTrackedResource",
        "RegistryDiscoveryDto",
        "ComputeResource",
        "ListUsagesResult",
    } <= routes, routes
    registry = {d for _, _, _, d, source in checked if source == contract.REGISTRY_FILE}
    assert "ModelVersionResource" in registry, registry
    problems = captured.problems()
    assert problems == [], "\n".join(problems)
