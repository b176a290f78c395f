"""The fake's registry discovery and registry data-plane replies follow their contracts.

Discovery (``/registrymanagement/v1.0/registries/{name}/discovery``) is checked against the
vendored v1.0 swagger; the registry model and component routes (api-version
2021-10-01-dataplanepreview) against the swagger azure-sdk-for-python generates its
``_restclient/v2021_10_01_dataplanepreview`` client from (``mfe.2021-10-01-dataplanepreview.json``;
the file is not in azure-rest-api-specs). System metadata is the one documented key beyond that
contract (``_contract_capture.REGISTRY_MODEL_EXTENSIONS``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import _contract as contract
import pytest
from _contract_capture import Captured, capture, without_registry_extensions

from phi_finetune.testing import FakeAzureML

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "Phi-3-mini-4k-instruct"  # archived: listings hide it, as the service does
LIVE = "Phi-4"  # the default seed's live model
REGISTRY_API = "api-version=2021-10-01-dataplanepreview"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


@pytest.fixture
def captured(fake: FakeAzureML) -> Iterator[Captured]:
    with capture() as seen:
        yield seen


def _get(fake: FakeAzureML, url: str) -> tuple[int, Any]:
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    token = fake.credential().get_token("https://ml.azure.com/.default").token
    request = HttpRequest("GET", url, headers={"Authorization": f"Bearer {token}"})
    response = RequestsTransport().send(request)
    text = response.text()
    return response.status_code, json.loads(text) if text else None


def _registry_url(fake: FakeAzureML, suffix: str) -> str:
    return (
        f"https://{fake.api_host}/mferp/managementfrontend/subscriptions/"
        f"{fake.registry_subscription_id}/resourceGroups/{fake.registry_resource_group}/"
        f"providers/Microsoft.MachineLearningServices/registries/azureml{suffix}?{REGISTRY_API}"
    )


def _registry_problems(definition: str, body: Any) -> list[str]:
    stripped, problems = without_registry_extensions(body)
    return problems + contract.errors(definition, stripped, contract.REGISTRY_FILE)


# ---------------------------------------------------------------------------- the vendored data


def test_registry_files_name_their_source_and_how_they_were_made() -> None:
    registry = contract.spec(contract.REGISTRY_FILE)
    vendored = registry["_vendored"]
    assert vendored["repository"] == "Azure/azure-sdk-for-python"
    assert vendored["apiVersion"] == "2021-10-01-dataplanepreview"
    assert vendored["license"].startswith("MIT")
    swagger = next(p for p in vendored["sources"] if p.endswith("dataplanepreview/mfe.json"))
    assert len(vendored["sources"][swagger]["commit"]) == 40
    assert "v2021-10-01-dataplanepreview" in vendored["sources"][swagger]["autorest"]
    assert set(vendored["definitionSource"]) == set(registry["definitions"])
    assert vendored["stubs"] == []
    discovery = contract.spec(contract.DISCOVERY_FILE)["_vendored"]
    assert discovery["repository"] == "Azure/azure-rest-api-specs"
    (path,) = discovery["sources"]
    assert path.endswith("RegistryDiscovery/stable/v1.0/registry-discovery.json")
    assert len(discovery["sources"][path]["commit"]) == 40


def test_the_registry_validator_rejects_what_the_contract_does_not_name() -> None:
    body: dict[str, Any] = {"id": "x", "properties": {"modelUri": "u", "stage": "Production"}}
    assert "'stage' was unexpected" in "\n".join(_registry_problems("ModelVersionResource", body))
    body["properties"] = {"modelUri": "u", "system_metadata": {"a": 1}}
    assert _registry_problems("ModelVersionResource", body) == []
    body["properties"]["systemMetadata"] = {"a": 1}
    assert any("both" in p for p in _registry_problems("ModelVersionResource", body))
    body["properties"] = {"system_metadata": "text"}
    assert any("not an object" in p for p in _registry_problems("ModelVersionResource", body))
    assert _registry_problems("ModelVersionResource", {"id": "x"}) != []  # properties is required
    bad_discovery = {"registryName": "azureml", "workspaceName": None}
    assert contract.errors("RegistryDiscoveryDto", bad_discovery, contract.DISCOVERY_FILE) != []


# ---------------------------------------------------------------------------- the replies


def test_discovery_reply_validates_and_sends_no_null_workspace_name(fake: FakeAzureML) -> None:
    url = f"{fake.api_url}registrymanagement/v1.0/registries/azureml/discovery"
    status, body = _get(fake, url)
    assert status == 200
    assert contract.errors("RegistryDiscoveryDto", body, contract.DISCOVERY_FILE) == []
    assert "workspaceName" not in body
    assert body["primaryRegionResourceProviderUri"] == fake.api_url


def test_registry_model_version_and_list_validate(fake: FakeAzureML) -> None:
    fake.registry_client()
    status, version = _get(fake, _registry_url(fake, f"/models/{MODEL}/versions/15"))
    assert status == 200
    assert _registry_problems("ModelVersionResource", version) == []
    assert "stage" not in version["properties"]
    status, listing = _get(fake, _registry_url(fake, f"/models/{LIVE}/versions"))
    assert status == 200 and listing["value"]
    assert _registry_problems("ModelVersionResourceArmPaginatedResult", listing) == []
    status, container = _get(fake, _registry_url(fake, f"/models/{MODEL}"))
    assert status == 200
    assert _registry_problems("ModelContainerResource", container) == []


def test_the_reference_model_and_both_system_metadata_spellings_validate(
    fake: FakeAzureML,
) -> None:
    fake.add_reference_model()
    fake.registry_client()
    for key in ("system_metadata", "systemMetadata"):
        fake.set_system_metadata_key(key)
        status, version = _get(fake, _registry_url(fake, f"/models/{MODEL}/versions/15"))
        assert status == 200
        assert key in version["properties"]
        assert version["properties"]["isArchived"] is True
        assert _registry_problems("ModelVersionResource", version) == [], key


def test_registry_component_version_and_list_validate(fake: FakeAzureML) -> None:
    fake.registry_client()
    name = "chat_completion_pipeline"
    status, listing = _get(fake, _registry_url(fake, f"/components/{name}/versions"))
    assert status == 200 and listing["value"]
    assert _registry_problems("ComponentVersionResourceArmPaginatedResult", listing) == []
    version = listing["value"][0]["name"]
    status, body = _get(fake, _registry_url(fake, f"/components/{name}/versions/{version}"))
    assert status == 200
    assert _registry_problems("ComponentVersionResource", body) == []


def test_sdk_registry_reads_validate_and_still_parse(fake: FakeAzureML, captured: Captured) -> None:
    registry = fake.registry_client()
    model = registry.models.get(MODEL, version="15")
    assert model.version == "15"
    assert [m.version for m in registry.models.list(LIVE)]
    component = registry.components.get("chat_completion_pipeline", label="latest")
    assert component.type == "pipeline"
    checked = {definition for _, _, _, definition, _ in captured.checked()}
    assert {
        "RegistryDiscoveryDto",
        "ModelVersionResource",
        "ComponentVersionResourceArmPaginatedResult",
    } <= checked
    problems = captured.problems()
    assert problems == [], "\n".join(problems)
