"""The fake's serverless replies follow the published contract.

The notebook's flow (fine-tuning job, serverless endpoint, keys, marketplace subscription, the
lists) runs through the real SDK while azure-core's transport captures every reply; each is
validated against the vendored swagger of the api-version it was asked for, with the serverless
supplements (``tests/data/contract/maas.2024-01-01-preview.json``,
``finetuning.2024-10-01-preview.json``) merged in. The vendored examples validate against the same
transcription, and the check rejects what the specification does not name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _contract as contract
import pytest
from _contract_capture import SUPPLEMENTS, capture, contract_for, swagger_for
from _serverless_flow import BASE_MODEL, finetuning_job, wait_for_job, workspace_model_id

from phi_finetune.testing import FakeAzureML

pytest.importorskip("azure.ai.ml")
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

V2401 = "2024-01-01-preview"
V2410 = "2024-10-01-preview"
LLAMA = "azureml://registries/azureml-meta/models/Llama-2-7b"


def _merged(api: str) -> Path:
    found = swagger_for(api)
    assert found is not None
    return found


def _errors(definition: str, body: Any, api: str) -> list[str]:
    return contract.errors(definition, body, _merged(api))


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.set_workspace_kind("Project")
        service.add_model(
            "Llama-2-7b",
            11,
            registry="azureml-meta",
            system_metadata={"publisher": "Meta", "deploymentOptions": ["ServerlessMaaS"]},
        )
        yield service


def _notebook_flow(fake: FakeAzureML) -> None:
    from azure.ai.ml.entities import MarketplaceSubscription, ServerlessEndpoint

    fake.page_size = 1
    ml = fake.workspace_client()
    created = ml.jobs.create_or_update(finetuning_job())
    wait_for_job(ml, created.name)
    list(ml.jobs.list())
    managed = ml.jobs.create_or_update(finetuning_job(instance_types=["Standard_NC24ads_A100_v4"]))
    wait_for_job(ml, managed.name)
    model = created.outputs["registered_model"]["name"]
    ml.models.get(model, "1")
    subscription = MarketplaceSubscription(name="llama-sub", model_id=LLAMA)
    ml.marketplace_subscriptions.begin_create_or_update(subscription).result()
    ml.marketplace_subscriptions.get("llama-sub")
    list(ml.marketplace_subscriptions.list())
    for name, model_id in (
        ("ft-ep", workspace_model_id(ml, model)),
        ("base-ep", BASE_MODEL.rsplit("/versions/", 1)[0]),
        ("llama-ep", LLAMA),
    ):
        endpoint = ServerlessEndpoint(name=name, model_id=model_id)
        ml.serverless_endpoints.begin_create_or_update(endpoint).result()
    ml.serverless_endpoints.get("ft-ep")
    ml.serverless_endpoints.get_keys("ft-ep")
    list(ml.serverless_endpoints.list())
    for name in ("ft-ep", "base-ep", "llama-ep"):
        ml.serverless_endpoints.begin_delete(name).result()
    ml.marketplace_subscriptions.begin_delete("llama-sub").result()


def test_every_serverless_reply_follows_the_contract(fake: FakeAzureML) -> None:
    with capture() as seen:
        _notebook_flow(fake)
    expected = {
        "ServerlessEndpointTrackedResource": {V2401},
        "ServerlessEndpointTrackedResourceArmPaginatedResult": {V2401},
        "EndpointAuthKeys": {V2401},
        "MarketplaceSubscriptionResource": {V2401},
        "MarketplaceSubscriptionResourceArmPaginatedResult": {V2401},
        "JobBaseResource": {V2401, V2410},
        "JobBaseResourceArmPaginatedResult": {V2401},
    }
    for definition, versions in expected.items():
        assert {api for _, _, api, _ in seen.on(definition)} == versions, definition
    fine_tuning = [
        body
        for _, _, _, body in seen.on("JobBaseResource")
        if body["properties"]["jobType"] == "FineTuning"
    ]
    assert fine_tuning, "no FineTuning job reply was checked"
    problems = seen.problems()
    assert problems == [], "\n".join(problems)
    assert fake.unrouted == []


def test_regenerate_keys_reply_follows_the_contract(fake: FakeAzureML) -> None:
    from _serverless_flow import raw

    sent = {
        "properties": {"modelSettings": {"modelId": BASE_MODEL.rsplit("/versions/", 1)[0]}},
        "location": "eastus",
    }
    with capture() as seen:
        raw(fake, "PUT", "/serverlessEndpoints/rk-ep", sent)
        raw(fake, "POST", "/serverlessEndpoints/rk-ep/regenerateKeys", {"keyType": "Primary"})
    paths = [p for _, p, _, _ in seen.on("EndpointAuthKeys")]
    assert len(paths) == 1 and paths[0].endswith("/regenerateKeys")
    assert seen.problems() == []


def test_the_routes_have_a_contract_at_the_versions_the_sdk_sends() -> None:
    ws = (
        "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"
    )
    for method, path, api, definition in (
        ("PUT", f"{ws}/serverlessEndpoints/e", V2401, "ServerlessEndpointTrackedResource"),
        (
            "GET",
            f"{ws}/serverlessEndpoints",
            V2401,
            "ServerlessEndpointTrackedResourceArmPaginatedResult",
        ),
        ("POST", f"{ws}/serverlessEndpoints/e/listKeys", V2401, "EndpointAuthKeys"),
        ("PUT", f"{ws}/marketplaceSubscriptions/m", V2401, "MarketplaceSubscriptionResource"),
        ("PUT", f"{ws}/jobs/j", V2410, "JobBaseResource"),
        ("GET", f"{ws}/jobs/j", V2401, "JobBaseResource"),
    ):
        found = contract_for(method, path, api)
        assert not isinstance(found, str), found
        assert found[1] == definition
        assert "supplements" in found[0].name


def test_supplements_name_their_sources_and_merge_over_the_version_file() -> None:
    for api, names in SUPPLEMENTS.items():
        for name in names:
            doc = contract.spec(contract.CONTRACT_DIR / name)
            vendored = doc["_vendored"]
            assert vendored["apiVersion"] == api and "MIT" in vendored["license"]
            assert set(vendored["definitionSource"]) == set(doc["definitions"])
            for source in vendored["sources"].values():
                assert source.get("commit")
        merged = contract.spec(_merged(api))["definitions"]
        assert "FineTuning" in merged["JobType"]["enum"]
        assert "PipelineJob" in merged or api == V2410  # the version file's own jobs stay


def _example(name: str, status: str = "200") -> Any:
    return copy.deepcopy(contract.example(name)["responses"][status]["body"])


def test_the_vendored_examples_validate_against_the_transcription() -> None:
    assert (
        _errors("ServerlessEndpointTrackedResource", _example("ServerlessEndpoint_get"), V2401)
        == []
    )
    assert _errors("EndpointAuthKeys", _example("ServerlessEndpoint_listKeys"), V2401) == []
    for status in ("200", "201"):
        body = _example("MarketplaceSubscription_createOrUpdate", status)
        assert _errors("MarketplaceSubscriptionResource", body, V2401) == []
    job = _example("FineTuningJob_createOrUpdate")
    # the example's 'Created' is no JobStatus value; identity and notificationSetting are stubs
    assert any("'Created'" in p for p in _errors("JobBaseResource", job, V2410))
    job["properties"]["status"] = "NotStarted"
    del job["properties"]["identity"], job["properties"]["notificationSetting"]
    assert _errors("JobBaseResource", job, V2410) == []


def test_the_check_rejects_what_the_specification_does_not_name(fake: FakeAzureML) -> None:
    from _serverless_flow import raw

    sent = {
        "properties": {"modelSettings": {"modelId": BASE_MODEL.rsplit("/versions/", 1)[0]}},
        "location": "eastus",
    }
    _, body, _ = raw(fake, "PUT", "/serverlessEndpoints/drift-ep", sent)
    assert _errors("ServerlessEndpointTrackedResource", body, V2401) == []
    for mutate in (
        lambda b: b["properties"].update(endpointState="Running"),
        lambda b: b["properties"].update(scoringUri="https://x"),
        lambda b: b.pop("location"),
        lambda b: b["properties"]["modelSettings"].pop("modelId"),
    ):
        broken = json.loads(json.dumps(body))
        mutate(broken)
        assert _errors("ServerlessEndpointTrackedResource", broken, V2401), broken
    job = _example("FineTuningJob_createOrUpdate")
    job["properties"]["status"] = "Completed"
    del job["properties"]["identity"], job["properties"]["notificationSetting"]
    job["properties"]["fineTuningDetails"]["hyperParameters"] = {"epochs": 1}
    assert any("hyperParameters" in p for p in _errors("JobBaseResource", job, V2410))
    # at 2024-01-01-preview a FineTuningJob has no 'resources'
    del job["properties"]["fineTuningDetails"]["hyperParameters"]
    assert any("resources" in p for p in _errors("JobBaseResource", job, V2401))
