"""The workspace routes follow the published workspaceRP.json Workspace tree of each api-version.

azure-ai-ml 1.35.2 reads the workspace at 2023-08-01-preview and 2024-10-01-preview; each reply
is validated against ``tests/data/contract/workspaceRP.<api-version>.json`` (transcribed from
Azure/azure-rest-api-specs, see the README there), the compute, VM-size and usage replies the SDK
reads against ``machineLearningServices.2023-08-01-preview.json``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _contract as contract
import pytest
from _contract_capture import Captured, capture, contract_for

from phi_finetune.testing import FakeAzureML

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VERSIONS = sorted(contract.WORKSPACE_BY_API_VERSION)
A100 = "Standard_NC24ads_A100_v4"
RP = "workspaceRP.json"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def _source(version: str) -> Path:
    return contract.WORKSPACE_BY_API_VERSION[version]


def _problems(definition: str, body: Any, version: str) -> list[str]:
    return contract.errors(definition, body, _source(version))


def _raw(fake: FakeAzureML, url: str) -> tuple[int, Any]:
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    token = fake.credential().get_token("https://management.azure.com/.default").token
    response = RequestsTransport().send(
        HttpRequest("GET", url, headers={"Authorization": f"Bearer {token}"})
    )
    text = response.text()
    return response.status_code, json.loads(text) if text else None


def _example(version: str) -> dict[str, Any]:
    body: dict[str, Any] = contract.example(f"Workspace_get.{version}")["responses"]["200"]["body"]
    return copy.deepcopy(body)


def _hub_and_project(version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hub and a project as the swagger gives them (Workspace.kind, WorkspaceProperties
    hubResourceId / associatedWorkspaces / workspaceHubConfig), on the shape of get.json: the
    version's examples/Workspace folder has no hub or project example."""
    hub = _example(version)
    hub_id = hub["id"]
    project_id = hub_id.rsplit("/", 1)[0] + "/testproject"
    hub["kind"] = "Hub"
    hub["properties"]["associatedWorkspaces"] = [project_id]
    hub["properties"]["workspaceHubConfig"] = {
        "additionalWorkspaceStorageAccounts": [],
        "defaultWorkspaceResourceGroup": hub_id.split("/providers/")[0],
    }
    project = _example(version)
    project.update(id=project_id, name="testproject", kind="Project")
    for body in (hub, project):  # azure-ai-ml (with mlflow) needs the tracking URI
        body["properties"]["mlFlowTrackingUri"] = "azureml://eastus2euap.api.azureml.ms/mlflow/v1.0"
    props = project["properties"]
    for shared in ("storageAccount", "keyVault", "applicationInsights", "containerRegistry"):
        del props[shared]  # a project uses its hub's resources
    props["hubResourceId"] = hub_id
    return hub, project


# ---------------------------------------------------------------------------- the vendored data


@pytest.mark.parametrize("version", VERSIONS)
def test_vendored_workspace_tree_names_its_source(version: str) -> None:
    document = contract.spec(_source(version))
    source = document["_vendored"]
    assert source["repository"] == "Azure/azure-rest-api-specs"
    assert source["apiVersion"] == version
    assert source["license"].startswith("MIT")
    rp = next(path for path in source["sources"] if path.endswith(f"/{version}/{RP}"))
    assert len(source["sources"][rp]["commit"]) == 40
    assert set(source["definitionSource"]) == set(document["definitions"])
    assert set(source["definitionSource"].values()) <= set(source["sources"])
    assert source["stubs"] == []  # the whole tree Workspace reaches is transcribed
    for name, schema in document["definitions"].items():
        assert "not" not in schema, f"{name} is a stub"
    assert document["operations"]["Workspaces_Get"]["responses"]["200"]["schema"] == "Workspace"


@pytest.mark.parametrize("version", VERSIONS)
def test_published_workspace_example_validates(version: str) -> None:
    data = contract.example(f"Workspace_get.{version}")
    vendored = data["_vendored"]
    assert vendored["repository"] == "Azure/azure-rest-api-specs"
    assert vendored["path"].endswith(f"/{version}/examples/Workspace/get.json")
    assert data["parameters"]["api-version"] == version
    assert _problems("Workspace", data["responses"]["200"]["body"], version) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_workspace_validator_is_strict(version: str) -> None:
    body = _example(version)
    body["properties"]["provisioningState"] = "Done"
    body["properties"]["hubResourceId"] = ["not", "a", "string"]
    body["properties"]["workspaceHubConfig"] = {"defaultWorkspaceResourceGroup": 1, "x": 1}
    body["properties"]["encryption"].pop("status")
    body["properties"]["managedNetwork"]["outboundRules"]["pe"] = {
        "type": "PrivateEndpoint",
        "destination": "a string is the FQDN rule's destination",
    }
    body["sku"] = {"tier": "Basic"}
    body["unknownTopLevel"] = 1
    text = "\n".join(_problems("Workspace", body, version))
    assert "'Done' is not one of" in text
    assert "$.properties.hubResourceId: ['not', 'a', 'string'] is not of type 'string'" in text
    assert "$.properties.workspaceHubConfig.defaultWorkspaceResourceGroup" in text
    assert "'x' was unexpected" in text
    assert "'status' is a required property" in text
    # the discriminated subtype is picked: PrivateEndpointOutboundRule wants an object
    assert "$.properties.managedNetwork.outboundRules.pe.destination" in text
    assert "'name' is a required property" in text
    assert "'unknownTopLevel' was unexpected" in text


def test_the_two_versions_differ_as_published() -> None:
    """2024-10-01-preview moved serverless compute into serverlessComputeSettings and added
    ipAllowlist; 2023-08-01-preview has the flat serverlessCompute* keys."""
    old, new = "2023-08-01-preview", "2024-10-01-preview"
    settings = _example(new)
    settings["properties"]["serverlessComputeSettings"] = {"serverlessComputeNoPublicIP": True}
    settings["properties"]["ipAllowlist"] = ["10.0.0.1"]
    assert _problems("Workspace", settings, new) == []
    text = "\n".join(_problems("Workspace", settings, old))
    assert "('ipAllowlist', 'serverlessComputeSettings' were unexpected)" in text
    flat = _example(old)
    flat["properties"]["serverlessComputeNoPublicIP"] = True
    assert _problems("Workspace", flat, old) == []
    assert "'serverlessComputeNoPublicIP' was unexpected" in "\n".join(
        _problems("Workspace", flat, new)
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_hub_and_project_workspaces_validate(version: str) -> None:
    hub, project = _hub_and_project(version)
    assert _problems("Workspace", hub, version) == []
    assert _problems("Workspace", project, version) == []
    listing = {"value": [hub, project], "nextLink": "https://management.azure.com/next"}
    assert _problems("WorkspaceListResult", listing, version) == []
    assert _problems("WorkspaceListResult", {"value": [hub], "next_link": "x"}, version) != []


def test_sdk_reads_a_project_and_a_hub_as_published(fake: FakeAzureML) -> None:
    from azure.ai.ml.entities import Hub, Project

    hub, project = _hub_and_project("2024-10-01-preview")
    fake.inject_fault("GET", r"/workspaces/testproject\?", status=200, body=project, times=None)
    fake.inject_fault("GET", r"/workspaces/testworkspace\?", status=200, body=hub, times=None)
    ml = fake.workspace_client()
    got = ml.workspaces.get("testproject")
    assert isinstance(got, Project)
    assert got.hub_id == hub["id"]
    got_hub = ml.workspaces.get("testworkspace")
    assert isinstance(got_hub, Hub)


# ---------------------------------------------------------------------------- the fake's replies


@pytest.mark.parametrize("version", VERSIONS)
def test_fake_workspace_reply_validates_at_each_version(fake: FakeAzureML, version: str) -> None:
    url = f"https://management.azure.com{fake.workspace_id}?api-version={version}"
    status, body = _raw(fake, url)
    assert status == 200
    found = contract_for("GET", fake.workspace_id, version)
    assert found == (_source(version), "Workspace")
    assert _problems("Workspace", body, version) == []
    assert body["kind"] == "Default"


def test_workspace_route_at_an_unvendored_version_is_a_problem() -> None:
    path = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices"
    why = contract_for("GET", path + "/workspaces/w", "2025-01-01-preview")
    assert isinstance(why, str) and "no workspace swagger vendored" in why


def test_sdk_workspace_and_compute_replies_validate(fake: FakeAzureML) -> None:
    from azure.ai.ml.entities import AmlCompute

    with capture() as captured:
        ml = fake.workspace_client()
        assert ml.workspaces.get(fake.workspace_name).name == fake.workspace_name
        ml.compute.begin_create_or_update(
            AmlCompute(name="gpu", size=A100, min_instances=0, max_instances=1)
        ).result()
        assert ml.compute.get("gpu").name == "gpu"
        assert "gpu" in [c.name for c in ml.compute.list()]
        assert list(ml.compute.list_sizes())
        assert list(ml.compute.list_usage())
    _all_valid(
        captured,
        "Workspace",
        "ComputeResource",
        "PaginatedComputeResourcesList",
        "VirtualMachineSizeListResult",
        "ListUsagesResult",
    )
    versions = {api for _, _, api, _ in captured.on("Workspace")}
    assert versions <= set(VERSIONS) and versions


def _all_valid(captured: Captured, *definitions: str) -> None:
    for definition in definitions:
        assert captured.on(definition), f"no reply was validated against {definition}"
    problems = captured.problems()
    assert problems == [], "\n".join(problems)


def test_workspace_list_replies_validate_and_page(fake: FakeAzureML) -> None:
    """Workspaces_ListByResourceGroup and _ListBySubscription (routes the fake lacked before)."""
    with capture() as captured:
        names = [w.name for w in fake.workspace_client().workspaces.list()]
        everywhere = fake.workspace_client().workspaces.list(scope="subscription")
        assert fake.workspace_name in [w.name for w in everywhere]
    assert names == [fake.workspace_name]
    _all_valid(captured, "WorkspaceListResult")
    rg = f"/subscriptions/{fake.subscription_id}/resourceGroups/{fake.resource_group}"
    url = f"https://management.azure.com{rg}/providers/Microsoft.MachineLearningServices/workspaces"
    for version in VERSIONS:
        status, body = _raw(fake, f"{url}?api-version={version}")
        assert status == 200
        assert _problems("WorkspaceListResult", body, version) == []
        assert [w["name"] for w in body["value"]] == [fake.workspace_name]
    status, _ = _raw(fake, url.replace(fake.resource_group, "rg-missing") + "?api-version=x")
    assert status == 404
