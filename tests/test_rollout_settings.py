"""Probe and request settings: ``[deploy]`` -> DeploymentSpec -> the SDK's ManagedOnlineDeployment
-> the fake (echoed, validated, replies checked against the vendored swagger) and back; bad values
give errors that name the key; the fake's traffic and mirror rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _contract_capture import Captured, capture

pytest.importorskip("azure.ai.ml")

from azure.ai.ml.entities import (
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineRequestSettings,
    ProbeSettings,
)
from azure.core.exceptions import HttpResponseError

from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.deployment_spec import DeploymentSpec
from phi_finetune.azure.registrar import ModelRegistrar
from phi_finetune.azure.rollout import Rollout
from phi_finetune.config import DeployConfig, load_run_config
from phi_finetune.errors import ConfigurationError
from phi_finetune.journal import Journal
from phi_finetune.testing import FakeAzureML

SIZE = "Standard_NC24ads_A100_v4"
SETTINGS: dict[str, int] = {
    "liveness_initial_delay": 1200,
    "liveness_period": 30,
    "liveness_timeout": 20,
    "liveness_failure_threshold": 40,
    "liveness_success_threshold": 1,
    "readiness_initial_delay": 900,
    "readiness_period": 15,
    "readiness_timeout": 12,
    "readiness_failure_threshold": 50,
    "readiness_success_threshold": 2,
    "request_timeout_ms": 120_000,
    "max_concurrent_requests_per_instance": 4,
    "max_queue_wait_ms": 2_000,
}


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_completed_job("job_1")
        yield service


@pytest.fixture
def captured(fake: FakeAzureML) -> Iterator[Captured]:
    with capture() as seen:
        yield seen


def test_defaults_suit_large_models() -> None:
    spec = DeploymentSpec()
    deployment = spec.to_deployment("ep-x", "azureml:m:1")
    assert deployment.liveness_probe.initial_delay == 600
    assert deployment.readiness_probe.initial_delay == 600
    assert deployment.liveness_probe.timeout == 10 and deployment.readiness_probe.timeout == 10
    assert deployment.liveness_probe.failure_threshold == 30
    assert deployment.request_settings.request_timeout_ms == 90_000
    assert deployment.request_settings.max_concurrent_requests_per_instance == 1


def test_settings_round_trip_through_the_sdk_to_the_fake(
    fake: FakeAzureML, captured: Captured, tmp_path: Any
) -> None:
    ml = fake.workspace_client()
    model = ModelRegistrar(ml, check_job_output=False).register(
        "job_1", base_model="Phi-4", name="phi-ft", version=1
    )
    spec = DeploymentSpec.from_config(DeployConfig(**SETTINGS, instance_type=SIZE))
    EndpointDeployer(ml, poll_interval_s=0).deploy(model, spec, endpoint_name="ep-settings")
    props = fake.deployments[("ep-settings", "demo")]["properties"]
    assert props["livenessProbe"] == {
        "initialDelay": "PT20M",
        "period": "PT30S",
        "timeout": "PT20S",
        "failureThreshold": 40,
        "successThreshold": 1,
    }
    assert props["readinessProbe"]["initialDelay"] == "PT15M"
    assert props["readinessProbe"]["successThreshold"] == 2
    assert props["requestSettings"] == {
        "requestTimeout": "PT2M",
        "maxConcurrentRequestsPerInstance": 4,
        "maxQueueWait": "PT2S",
    }
    # Read back through the SDK: the same values.
    got = ml.online_deployments.get(name="demo", endpoint_name="ep-settings")
    for kind in ("liveness", "readiness"):
        probe = getattr(got, f"{kind}_probe")
        for field in ("initial_delay", "period", "timeout", "failure_threshold"):
            assert getattr(probe, field) == SETTINGS[f"{kind}_{field}"], (kind, field)
    assert got.request_settings.request_timeout_ms == 120_000
    assert got.request_settings.max_concurrent_requests_per_instance == 4
    assert got.request_settings.max_queue_wait_ms == 2_000
    assert captured.on("OnlineDeploymentTrackedResource")
    assert captured.problems() == []


def test_the_toml_keys_reach_the_spec(tmp_path: Any) -> None:
    path = tmp_path / "phi-finetune.toml"
    lines = "\n".join(f"{key} = {value}" for key, value in SETTINGS.items())
    path.write_text(f'backend = "local"\n[deploy]\n{lines}\n')
    spec = DeploymentSpec.from_config(load_run_config(path).deploy)
    assert {key: getattr(spec, key) for key in SETTINGS} == SETTINGS


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("liveness_period", 0, ">= 1"),
        ("readiness_timeout", -5, ">= 1"),
        ("readiness_initial_delay", -1, ">= 0"),
        ("liveness_success_threshold", 2, "<= 1"),
        ("max_concurrent_requests_per_instance", 0, ">= 1"),
        ("max_queue_wait_ms", -1, ">= 0"),
        ("request_timeout_ms", 200_000, "180000"),
    ],
)
def test_bad_values_in_the_toml_name_the_key(
    tmp_path: Any, key: str, value: int, words: str
) -> None:
    path = tmp_path / "phi-finetune.toml"
    path.write_text(f'backend = "local"\n[deploy]\n{key} = {value}\n')
    with pytest.raises(ConfigurationError) as caught:
        load_run_config(path)
    text = str(caught.value)
    assert f"deploy.{key}" in text and words in text
    assert "phi-finetune.toml" in text


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("liveness_period", 0, "must be >= 1"),
        ("liveness_success_threshold", 3, "must be exactly 1"),
        ("readiness_failure_threshold", True, "must be an integer"),
        ("max_queue_wait_ms", -1, "must be >= 0"),
    ],
)
def test_bad_spec_values_are_refused_before_any_request(key: str, value: Any, words: str) -> None:
    from phi_finetune.testing import autospec_ml_client

    ml = autospec_ml_client()
    with pytest.raises(ConfigurationError, match=words) as caught:
        EndpointDeployer(ml).deploy("azureml:m:1", instance_type=SIZE, **{key: value})
    assert caught.value.key == key
    assert f"deploy.{key} in phi-finetune.toml" in str(caught.value)
    assert ml.online_endpoints.method_calls == []


def _raw_deployment(fake: FakeAzureML, **kwargs: Any) -> Any:
    ml = fake.workspace_client()
    ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="ep-raw", auth_mode="key")
    ).result()
    deployment = ManagedOnlineDeployment(
        name="blue",
        endpoint_name="ep-raw",
        model="azureml:phi-ft:1",
        instance_type=SIZE,
        instance_count=1,
        **kwargs,
    )
    return ml.online_deployments.begin_create_or_update(deployment).result()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"liveness_probe": ProbeSettings(failure_threshold=0)}, "failureThreshold"),
        ({"liveness_probe": ProbeSettings(success_threshold=2)}, "successThreshold must be 1"),
        (
            {"readiness_probe": ProbeSettings(failure_threshold=-3)},
            "readinessProbe.failureThreshold",
        ),
        ({"request_settings": OnlineRequestSettings(request_timeout_ms=300_000)}, "180000 ms"),
        (
            {"request_settings": OnlineRequestSettings(max_concurrent_requests_per_instance=0)},
            "maxConcurrentRequestsPerInstance",
        ),
    ],
)
def test_the_fake_refuses_bad_settings_like_the_service(
    fake: FakeAzureML, kwargs: dict[str, Any], words: str
) -> None:
    with pytest.raises(HttpResponseError, match=words):
        _raw_deployment(fake, **kwargs)


def _two_deployments(fake: FakeAzureML) -> Any:
    ml = fake.workspace_client()
    _raw_deployment(fake)
    green = ManagedOnlineDeployment(
        name="green", endpoint_name="ep-raw", model="azureml:phi-ft:1", instance_type=SIZE
    )
    ml.online_deployments.begin_create_or_update(green).result()
    endpoint = ml.online_endpoints.get(name="ep-raw")
    endpoint.traffic = {"blue": 100}
    return ml.online_endpoints.begin_create_or_update(endpoint).result()


@pytest.mark.parametrize(
    ("traffic", "mirror", "words"),
    [
        ({"blue": 90}, {}, "sum to 0 or 100"),
        ({"blue": 100}, {"green": 60}, "at most 50"),
        ({"blue": 90, "green": 10}, {"green": 10}, "both live and mirrored"),
        ({"blue": 100}, {"gone": 10}, "does not exist"),
        ({"blue": 100}, {"green": 10, "blue": 10}, "only one deployment"),
    ],
)
def test_the_fake_applies_the_traffic_and_mirror_rules(
    fake: FakeAzureML, traffic: dict[str, int], mirror: dict[str, int], words: str
) -> None:
    endpoint = _two_deployments(fake)
    endpoint.traffic, endpoint.mirror_traffic = traffic, mirror
    with pytest.raises(HttpResponseError, match=words):
        fake.workspace_client().online_endpoints.begin_create_or_update(endpoint).result()


def test_a_deployment_with_live_traffic_cannot_be_deleted(fake: FakeAzureML) -> None:
    _two_deployments(fake)
    ml = fake.workspace_client()
    with pytest.raises(HttpResponseError, match="still receives traffic"):
        ml.online_deployments.begin_delete(name="blue", endpoint_name="ep-raw").result()
    ml.online_deployments.begin_delete(name="green", endpoint_name="ep-raw").result()
    assert list(fake.deployments) == [("ep-raw", "blue")]


def test_rollout_replies_follow_the_swagger(
    fake: FakeAzureML, captured: Captured, tmp_path: Any
) -> None:
    ml = fake.workspace_client()
    journal = Journal.create(tmp_path, backend="azure")
    registrar = ModelRegistrar(ml, check_job_output=False)
    v1 = registrar.register("job_1", base_model="Phi-4", name="phi-ft", version=1)
    v2 = registrar.register("job_1", base_model="Phi-4", name="phi-ft", version=2)
    EndpointDeployer(ml, poll_interval_s=0).deploy(
        v1, endpoint_name="ep-swagger", deployment_name="blue", instance_type=SIZE
    )
    spec = DeploymentSpec(endpoint_name="ep-swagger", deployment_name="green", instance_type=SIZE)
    rollout = Rollout.begin(
        ml, journal, v2, endpoint_name="ep-swagger", spec=spec, mirror_percent=10, poll_interval_s=0
    )
    assert rollout.finish().phase == "done"
    assert captured.on("OnlineEndpointTrackedResource")
    assert captured.problems() == []


def test_endpoint_patch_changes_tags_only(fake: FakeAzureML) -> None:
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    _two_deployments(fake)
    url = (
        f"https://management.azure.com/subscriptions/{fake.subscription_id}/resourceGroups/"
        f"{fake.resource_group}/providers/Microsoft.MachineLearningServices/workspaces/"
        f"{fake.workspace_name}/onlineEndpoints/ep-raw?api-version=2023-04-01-preview"
    )
    token = fake.credential().get_token("https://management.azure.com/.default").token

    def patch(body: dict[str, Any]) -> Any:
        request = HttpRequest("PATCH", url, headers={"Authorization": f"Bearer {token}"})
        request.set_json_body(body)
        with RequestsTransport() as transport:
            return transport.send(request)

    refused = patch({"properties": {"traffic": {"green": 100}}})
    assert refused.status_code == 400 and "PUT" in refused.text()
    assert fake.endpoints["ep-raw"]["properties"]["traffic"] == {"blue": 100}
    accepted = patch({"tags": {"team": "nlp"}})
    assert accepted.status_code == 202 and accepted.headers["Location"]
    assert fake.endpoints["ep-raw"]["tags"]["team"] == "nlp"
