"""Discriminated subtypes are validated against the subtype the discriminator names.

Kubernetes online deployments (2022-02-01-preview, 2023-04-01-preview), ``TargetUtilization``
scale settings (2022-02-01-preview), ``custom_model`` job inputs and outputs and the job's
``identity``, ``notificationSetting`` and ``services.*.nodes`` (2024-01-01-preview) are transcribed
from the swagger of those versions (tests/data/contract/README.md); a discriminator value whose
subtype is not vendored fails instead of passing against the base.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _contract as contract
import pytest

from phi_finetune.testing import FakeAzureML

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

V2022 = contract.BY_API_VERSION["2022-02-01-preview"]
V2023 = contract.BY_API_VERSION["2023-04-01-preview"]
V2024 = contract.BY_API_VERSION["2024-01-01-preview"]
DEPLOYMENT = "OnlineDeploymentTrackedResource"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def _text(definition: str, body: Any, source: Path) -> str:
    return "\n".join(contract.errors(definition, body, source))


def _deployment(compute_type: str, **props: Any) -> dict[str, Any]:
    return {
        "location": "eastus",
        "properties": {"endpointComputeType": compute_type, **props},
    }


REQUIREMENTS = {
    "containerResourceRequests": {"cpu": "1", "memory": "2Gi", "gpu": None},
    "containerResourceLimits": {"cpu": "2", "memory": "4Gi"},
}


@pytest.mark.parametrize("source", [V2022, V2023], ids=["2022-02", "2023-04"])
def test_kubernetes_deployment_is_checked_against_its_subtype(source: Path) -> None:
    kube = _deployment("Kubernetes", containerResourceRequirements=REQUIREMENTS)
    assert contract.errors(DEPLOYMENT, kube, source) == []
    bad = copy.deepcopy(kube)
    bad["properties"]["containerResourceRequirements"]["containerResourceLimits"]["cpu"] = 2
    assert "containerResourceLimits.cpu: 2 is not of type 'string'" in _text(
        DEPLOYMENT, bad, source
    )
    # the Managed subtype has no container requirements: the subtype is picked, not the union
    managed = _deployment("Managed", containerResourceRequirements=REQUIREMENTS)
    assert "'containerResourceRequirements' was unexpected" in _text(DEPLOYMENT, managed, source)


def test_target_utilization_scale_settings_at_2022_02() -> None:
    scale = {
        "scaleType": "TargetUtilization",
        "minInstances": 1,
        "maxInstances": 3,
        "pollingInterval": "PT10S",
        "targetUtilizationPercentage": 70,
    }
    body = _deployment("Managed", scaleSettings=scale)
    assert contract.errors(DEPLOYMENT, body, V2022) == []
    default = _deployment("Managed", scaleSettings={**scale, "scaleType": "Default"})
    assert "$.properties.scaleSettings: Unevaluated properties are not allowed ('maxInstances'" in (
        _text(DEPLOYMENT, default, V2022)
    )
    wrong = _deployment("Managed", scaleSettings={**scale, "maxInstances": "3"})
    assert "maxInstances: '3' is not of type 'integer'" in _text(DEPLOYMENT, wrong, V2022)


def _job(**props: Any) -> dict[str, Any]:
    return {"properties": {"jobType": "Pipeline", **props}}


def test_custom_model_job_inputs_and_outputs() -> None:
    job = _job(
        inputs={"base": {"jobInputType": "custom_model", "uri": "azureml:phi:1", "mode": "Direct"}},
        outputs={"model": {"jobOutputType": "custom_model", "uri": None, "assetName": "ft"}},
    )
    assert contract.errors("JobBaseResource", job, V2024) == []
    missing_uri = _job(inputs={"base": {"jobInputType": "custom_model"}})
    assert "'uri' is a required property" in _text("JobBaseResource", missing_uri, V2024)
    literal_keys = _job(inputs={"base": {"jobInputType": "custom_model", "uri": "x", "value": "1"}})
    assert "'value' was unexpected" in _text("JobBaseResource", literal_keys, V2024)


def test_job_identity_notification_and_services_follow_the_swagger() -> None:
    job = _job(
        identity={"identityType": "Managed", "clientId": None, "resourceId": "/x"},
        notificationSetting={
            "emailOn": ["JobFailed", "JobCompleted"],
            "emails": ["a@example.com"],
            "webhooks": {"ado": {"webhookType": "AzureDevOps", "eventType": "RunTerminated"}},
        },
        services={
            "Studio": {"jobServiceType": "Studio", "endpoint": "https://ml.azure.com/x"},
            "ssh": {"jobServiceType": "SSH", "port": 22, "nodes": {"nodesValueType": "All"}},
        },
    )
    assert contract.errors("JobBaseResource", job, V2024) == []
    for identity in ({"identityType": "AMLToken"}, {"identityType": "UserIdentity"}):
        assert contract.errors("JobBaseResource", _job(identity=identity), V2024) == []
    text = _text(
        "JobBaseResource",
        _job(
            identity={"identityType": "UserIdentity", "clientId": "x"},
            notificationSetting={"emailOn": ["JobStarted"]},
            services={"ssh": {"nodes": {"nodesValueType": "Custom"}}},
        ),
        V2024,
    )
    assert "'clientId' was unexpected" in text
    assert "'JobStarted' is not one of" in text
    # NodesValueType names Custom, but the swagger defines no subtype for it
    assert "'Custom' is not one of ['All']" in text


def test_a_value_naming_an_untranscribed_subtype_fails() -> None:
    """CommandJob (jobType Command) is not vendored: refused, not checked as a bare JobBase."""
    text = _text("JobBaseResource", {"properties": {"jobType": "Command"}}, V2024)
    assert "'Command' is not one of ['Pipeline']" in text
    assert "'Kubernetes' is not one of" not in _text(DEPLOYMENT, _deployment("Kubernetes"), V2023)
    assert "'AzureMLCompute' is not one of ['Kubernetes', 'Managed']" in _text(
        DEPLOYMENT, _deployment("AzureMLCompute"), V2023
    )


@pytest.mark.parametrize("version", ["2022-02-01-preview", "2023-04-01-preview"])
def test_stubs_left_are_listed_and_refuse_values(version: str) -> None:
    source = contract.BY_API_VERSION[version]
    for stub in contract.spec(source)["_vendored"]["stubs"]:
        assert contract.errors(stub, {}, source) != []
    assert contract.spec(V2024)["_vendored"]["stubs"] == []


# ---------------------------------------------------------------------------- through the fake


def _raw(fake: FakeAzureML, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    token = fake.credential().get_token("https://management.azure.com/.default").token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body) if body is not None else None
    response = RequestsTransport().send(HttpRequest(method, url, headers=headers, data=data))
    text = response.text()
    return response.status_code, json.loads(text) if text else None


def test_fake_kubernetes_and_target_utilization_deployments_validate(fake: FakeAzureML) -> None:
    """The fake echoes the deployment it is sent; both subtypes come back as the swagger says."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    fake.workspace_client().online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="ep-sub", auth_mode="key")
    ).result()
    base = f"https://management.azure.com{fake.workspace_id}/onlineEndpoints/ep-sub/deployments"
    kube = _deployment("Kubernetes", containerResourceRequirements=REQUIREMENTS)
    status, body = _raw(fake, "PUT", f"{base}/kube?api-version=2023-04-01-preview", kube)
    assert status in (200, 201)
    assert body["properties"]["endpointComputeType"] == "Kubernetes"
    assert contract.errors(DEPLOYMENT, body, V2023) == []
    scale = {"scaleType": "TargetUtilization", "minInstances": 1, "maxInstances": 2}
    managed = _deployment("Managed", instanceType="Standard_DS3_v2", scaleSettings=scale)
    status, body = _raw(fake, "PUT", f"{base}/auto?api-version=2023-04-01-preview", managed)
    assert status in (200, 201)
    status, listing = _raw(fake, "GET", f"{base}?api-version=2022-02-01-preview")
    assert status == 200
    assert {d["properties"]["scaleSettings"]["scaleType"] for d in listing["value"]} >= {
        "TargetUtilization"
    }
    problems = contract.errors(f"{DEPLOYMENT}ArmPaginatedResult", listing, V2022)
    assert problems == []
