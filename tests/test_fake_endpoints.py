"""FakeAzureML: workspace models, online endpoints/deployments, keys, logs, scoring, whole flow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from azure.ai.ml.entities import (
    AmlCompute,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineRequestSettings,
    ProbeSettings,
)
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import HttpRequest

from phi_finetune.testing import FakeAzureML, Reply

REQUEST = {
    "input_data": {
        "input_string": [[{"role": "user", "content": "What is 2+2?"}]],
        "parameters": {"temperature": 0.6},
    },
    "params": {},
}


@pytest.fixture(autouse=True)
def _completed_jobs(request: pytest.FixtureRequest) -> None:
    """The fake refuses models registered from a job it does not know: the tests' models come
    from these jobs' outputs."""
    if "fake_azureml" in request.fixturenames:
        fake: FakeAzureML = request.getfixturevalue("fake_azureml")
        for job in ("job1", "job2", "other-job"):
            fake.add_completed_job(job)


def _model(version: str | None = "1", job: str = "job1") -> Model:
    return Model(
        name="phi-ft",
        version=version,
        path=f"azureml://jobs/{job}/outputs/trained_model",
        type="mlflow_model",
    )


def _endpoint(fake: FakeAzureML, name: str = "ep-fake-1") -> ManagedOnlineEndpoint:
    ml = fake.workspace_client()
    result: ManagedOnlineEndpoint = ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=name, auth_mode="key")
    ).result()
    return result


def _deployment(endpoint: str = "ep-fake-1", name: str = "demo") -> ManagedOnlineDeployment:
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model="azureml:phi-ft:1",
        instance_type="Standard_NC6s_v3",
        instance_count=1,
        liveness_probe=ProbeSettings(initial_delay=600),
        request_settings=OnlineRequestSettings(request_timeout_ms=90000),
    )


def _score(fake: FakeAzureML, endpoint: str, key: str, **headers: str) -> Any:
    """POST to the scoring URI through azure-core's transport (what the library does)."""
    from azure.core.pipeline.transport import RequestsTransport

    request = HttpRequest(
        "POST",
        fake.scoring_uri(endpoint),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
    )
    request.set_json_body(REQUEST)
    with RequestsTransport() as transport:
        return transport.send(request)


# ---------------------------------------------------------------------------- models


def test_model_create_get_and_conflict(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    created = ml.models.create_or_update(_model("1"))
    assert isinstance(created, Model)
    assert (created.name, created.version, created.type) == ("phi-ft", "1", "mlflow_model")
    (put,) = fake_azureml.find_requests("PUT", "/models/phi-ft/versions/1")
    assert put.json["properties"]["modelUri"] == "azureml://jobs/job1/outputs/trained_model"
    assert ml.models.get("phi-ft", version="1").version == "1"
    with pytest.raises(ResourceExistsError):
        ml.models.create_or_update(_model("1", job="other-job"))
    assert fake_azureml.models[("phi-ft", "1")]["properties"]["modelUri"].endswith(
        "job1/outputs/trained_model"
    )
    with pytest.raises(ResourceNotFoundError):
        ml.models.get("phi-ft", version="9")


def test_model_auto_versioning(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    ml.models.create_or_update(_model("1"))
    second = ml.models.create_or_update(_model(None, job="job2"))
    assert second.version == "2"
    assert ml.models.get("phi-ft", label="latest").version == "2"
    assert set(fake_azureml.models) == {("phi-ft", "1"), ("phi-ft", "2")}


# ---------------------------------------------------------------------------- endpoints


def test_endpoint_create_get_list_keys(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    endpoint = _endpoint(fake_azureml)
    assert isinstance(endpoint, ManagedOnlineEndpoint)
    assert endpoint.provisioning_state == "Succeeded"
    assert endpoint.scoring_uri == fake_azureml.scoring_uri("ep-fake-1")
    assert endpoint.auth_mode == "key"
    (put,) = fake_azureml.find_requests("PUT", "/onlineEndpoints/ep-fake-1")
    assert put.json["properties"]["authMode"] == "Key"
    assert fake_azureml.find_requests("GET", route="operation.status")
    assert ml.online_endpoints.get("ep-fake-1").name == "ep-fake-1"
    assert [e.name for e in ml.online_endpoints.list()] == ["ep-fake-1"]
    keys = ml.online_endpoints.get_keys("ep-fake-1")
    assert (keys.primary_key, keys.secondary_key) == fake_azureml.endpoint_keys("ep-fake-1")
    for req in fake_azureml.requests:
        assert keys.primary_key not in json.dumps(req.headers)


def test_endpoint_invalid_name_is_rejected(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    fake_azureml.inject_fault("PUT", r"/onlineEndpoints/", status=400, message="bad name")
    with pytest.raises(HttpResponseError):
        ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-x")).result()
    assert dict(fake_azureml.endpoints) == {}


def test_endpoint_get_unknown(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    with pytest.raises(ResourceNotFoundError):
        ml.online_endpoints.get("nope-endpoint")


def test_deployment_create_get_logs_traffic_and_invoke(
    fake_azureml: FakeAzureML, tmp_path: Path
) -> None:
    ml = fake_azureml.workspace_client()
    _endpoint(fake_azureml)
    deployment = ml.online_deployments.begin_create_or_update(_deployment()).result()
    assert isinstance(deployment, ManagedOnlineDeployment)
    assert deployment.provisioning_state == "Succeeded"
    assert deployment.instance_type == "Standard_NC6s_v3"
    assert deployment.instance_count == 1
    assert deployment.liveness_probe.initial_delay == 600
    (put,) = fake_azureml.find_requests("PUT", "/deployments/demo")
    assert put.json["properties"]["requestSettings"]["requestTimeout"] == "PT1M30S"
    got = ml.online_deployments.get("demo", endpoint_name="ep-fake-1")
    assert got.name == "demo"
    assert "Model loaded" in ml.online_deployments.get_logs("demo", "ep-fake-1", 10)

    endpoint = ml.online_endpoints.get("ep-fake-1")
    endpoint.traffic = {"demo": 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    assert ml.online_endpoints.get("ep-fake-1").traffic == {"demo": 100}

    request_file = tmp_path / "req.json"
    request_file.write_text(json.dumps(REQUEST), encoding="utf-8")
    answer = ml.online_endpoints.invoke(
        endpoint_name="ep-fake-1", request_file=str(request_file), deployment_name="demo"
    )
    assert json.loads(answer) == {"output": "echo: What is 2+2?"}
    assert fake_azureml.scoring_calls[-1][:2] == ("ep-fake-1", "demo")


def test_traffic_to_unknown_deployment_is_rejected(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    endpoint = _endpoint(fake_azureml)
    endpoint.traffic = {"ghost": 100}
    with pytest.raises(HttpResponseError, match="ghost"):
        ml.online_endpoints.begin_create_or_update(endpoint).result()


def test_scripted_deployment_failure_keeps_logs(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    _endpoint(fake_azureml)
    fake_azureml.script_deployment("Failed", ["loading model", "CUDA error: out of memory"])
    with pytest.raises(HttpResponseError, match="crashed"):
        ml.online_deployments.begin_create_or_update(_deployment()).result()
    logs = ml.online_deployments.get_logs("demo", "ep-fake-1", 5)
    assert "CUDA error: out of memory" in logs
    assert fake_azureml.deployments[("ep-fake-1", "demo")]["properties"]["provisioningState"] == (
        "Failed"
    )


def test_deployment_quota_from_usage(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    _endpoint(fake_azureml)
    fake_azureml.set_usage("standardNCSv3Family", 0, 4)
    with pytest.raises(HttpResponseError) as info:
        ml.online_deployments.begin_create_or_update(_deployment()).result()
    assert info.value.error is not None and info.value.error.code == "QuotaExceeded"
    assert dict(fake_azureml.deployments) == {}


def test_injected_quota_fault_on_deployment(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    _endpoint(fake_azureml)
    fake_azureml.inject_fault("PUT", r"/deployments/", quota=True)
    with pytest.raises(HttpResponseError, match="quota"):
        ml.online_deployments.begin_create_or_update(_deployment()).result()
    assert dict(fake_azureml.deployments) == {}


# ---------------------------------------------------------------------------- scoring


def _ready(fake: FakeAzureML) -> str:
    ml = fake.workspace_client()
    endpoint = _endpoint(fake)
    ml.models.create_or_update(_model("1"))
    ml.online_deployments.begin_create_or_update(_deployment()).result()
    endpoint.traffic = {"demo": 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    return fake.endpoint_keys("ep-fake-1")[0]


def test_scoring_checks_key_and_routes_by_traffic(fake_azureml: FakeAzureML) -> None:
    key = _ready(fake_azureml)
    ok = _score(fake_azureml, "ep-fake-1", key)
    assert ok.status_code == 200
    assert json.loads(ok.text()) == {"output": "echo: What is 2+2?"}
    assert _score(fake_azureml, "ep-fake-1", "wrong-key").status_code == 401
    secondary = fake_azureml.endpoint_keys("ep-fake-1")[1]
    assert _score(fake_azureml, "ep-fake-1", secondary).status_code == 200
    missing = _score(fake_azureml, "ep-fake-1", key, **{"azureml-model-deployment": "nope"})
    assert missing.status_code == 404
    (last,) = fake_azureml.find_requests("POST", "/score")[-1:]
    assert last.headers["Authorization"] == "***"


def test_scorer_shapes_and_custom_scorer(fake_azureml: FakeAzureML) -> None:
    key = _ready(fake_azureml)
    fake_azureml.set_scorer(shape="list")
    assert json.loads(_score(fake_azureml, "ep-fake-1", key).text()) == [
        {"0": "echo: What is 2+2?"}
    ]
    fake_azureml.set_scorer(lambda payload, deployment: {"output": f"4 from {deployment}"})
    assert json.loads(_score(fake_azureml, "ep-fake-1", key).text()) == {"output": "4 from demo"}
    fake_azureml.set_scorer(lambda payload, deployment: Reply(status=500, json={"error": "x"}))
    assert _score(fake_azureml, "ep-fake-1", key).status_code == 500


# ---------------------------------------------------------------------------- whole flow


def test_whole_flow_compute_to_delete_is_fast(fake_azureml: FakeAzureML, tmp_path: Path) -> None:
    fake = fake_azureml
    ml = fake.workspace_client()
    ml.workspaces.get(fake.workspace_name)  # pays the one-time mlflow import of the SDK
    fake.clear_requests()
    started = time.perf_counter()

    reg = fake.registry_client()
    ml.compute.begin_create_or_update(
        AmlCompute(name="gpu", size="Standard_NC24ads_A100_v4", max_instances=1)
    ).result()
    assert ml.compute.get("gpu").provisioning_state == "Succeeded"
    gpus = {s.name: s.gpus for s in ml.compute.list_sizes()}["Standard_NC24ads_A100_v4"]
    assert gpus == 1
    assert list(ml.compute.list_usage())
    base = reg.models.get("Phi-4", label="latest")
    component = reg.components.get("chat_completion_pipeline", label="latest")

    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")

    @pipeline(name="flow")  # type: ignore[misc]
    def build() -> dict[str, Any]:
        node = component(
            mlflow_model_path=base.id,
            compute_finetune="gpu",
            train_file_path=Input(type="uri_file", path=str(train)),
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    job = ml.jobs.create_or_update(build(), experiment_name="flow")
    ml.jobs.stream(job.name)
    model = ml.models.create_or_update(
        Model(
            name="phi-ft",
            version="1",
            path=f"azureml://jobs/{job.name}/outputs/trained_model",
            type="mlflow_model",
        )
    )
    endpoint = _endpoint(fake)
    ml.online_deployments.begin_create_or_update(_deployment()).result()
    endpoint.traffic = {"demo": 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    key = ml.online_endpoints.get_keys("ep-fake-1").primary_key
    assert _score(fake, "ep-fake-1", key).status_code == 200
    ml.online_endpoints.begin_delete(name="ep-fake-1").result()
    elapsed = time.perf_counter() - started

    assert model.version == "1"
    assert dict(fake.endpoints) == {}
    assert dict(fake.deployments) == {}
    assert fake.billable() == []
    assert fake.unrouted == []
    assert elapsed < 10, f"whole fake flow took {elapsed:.2f}s"


def test_abandoned_poller_stops_before_the_fake_does() -> None:
    # a caller that gives up waiting leaves azure-core's polling thread behind; it must not
    # outlive the fake and poll the real management.azure.com
    with FakeAzureML() as fake:
        fake.add_completed_job("job1")  # the models below come from its output
        fake.lro_polls = 10**9
        poller = fake.workspace_client().online_endpoints.begin_create_or_update(
            ManagedOnlineEndpoint(name="never-done", auth_mode="key")
        )
        assert not poller.done()
    assert poller.done()
    assert poller.status() == "Canceled"
