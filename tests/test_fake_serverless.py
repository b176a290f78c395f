"""The fake serves the serverless ("models as a service") route: fine-tuning jobs, serverless
endpoints with keys and an OpenAI-compatible chat route, and marketplace subscriptions, driven
with the real SDK calls of the azureml-examples notebook and with raw HTTP for the errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _serverless_flow import (
    BASE_MODEL,
    finetuning_body,
    finetuning_job,
    raw,
    wait_for_job,
    workspace_model_id,
)

from phi_finetune.testing import FakeAzureML

pytest.importorskip("azure.ai.ml")
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

LLAMA = "azureml://registries/azureml-meta/models/Llama-2-7b"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.set_workspace_kind("Project")
        yield service


@pytest.fixture
def ml(fake: FakeAzureML) -> Any:
    return fake.workspace_client()


def _finetune(ml: Any, **overrides: Any) -> tuple[str, str]:
    """Submit and finish a fine-tuning job; ``(job name, registered model name)``."""
    created = ml.jobs.create_or_update(finetuning_job(**overrides))
    assert wait_for_job(ml, created.name)[-1] == "Completed"
    return created.name, created.outputs["registered_model"]["name"]


def _endpoint(ml: Any, name: str, model_id: str) -> Any:
    from azure.ai.ml.entities import ServerlessEndpoint

    endpoint = ServerlessEndpoint(name=name, model_id=model_id)
    return ml.serverless_endpoints.begin_create_or_update(endpoint).result()


def _chat(url: str, headers: dict[str, str], body: Any = None) -> Any:
    import requests

    payload = body if body is not None else {"messages": [{"role": "user", "content": "hi"}]}
    return requests.post(f"{url}/v1/chat/completions", json=payload, headers=headers, timeout=5)


# ---------------------------------------------------------------------------- fine-tuning jobs


def test_finetuning_job_runs_and_registers_its_model_as_version_1(
    fake: FakeAzureML, ml: Any
) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    created = ml.jobs.create_or_update(finetuning_job())
    name = created.outputs["registered_model"]["name"]
    assert name == "phi4-mini-ft"  # the SDK's output_model_name_prefix, as the service echoes it
    assert created.status == "NotStarted"
    with pytest.raises(ResourceNotFoundError):
        ml.models.get(name, "1")  # not before the job has completed
    statuses = wait_for_job(ml, created.name)
    assert statuses[-1] == "Completed" and len(statuses) >= 3
    model = ml.models.get(name, "1")
    assert model.version == "1" and model.type == "mlflow_model"
    assert fake.models[(name, "1")]["properties"]["jobName"] == created.name
    job = fake.jobs[created.name].body["properties"]
    assert job["fineTuningDetails"]["taskType"] == "ChatCompletion"
    assert job["fineTuningDetails"]["hyperParameters"] == {
        "per_device_train_batch_size": "1",
        "learning_rate": "0.00002",
    }
    # the SDK reads the job at 2024-01-01-preview, then again at 2024-10-01-preview
    versions = {r.query.get("api-version") for r in fake.find_requests("GET", "/jobs/")}
    assert versions == {"2024-01-01-preview", "2024-10-01-preview"}


def test_a_second_job_with_the_same_output_name_registers_version_2(
    fake: FakeAzureML, ml: Any
) -> None:
    _finetune(ml)
    _finetune(ml)
    assert {v for (n, v) in fake.models if n == "phi4-mini-ft"} == {"1", "2"}


def test_a_failed_or_cancelled_job_registers_no_model(fake: FakeAzureML, ml: Any) -> None:
    fake.script_job("Failed")
    failed = ml.jobs.create_or_update(finetuning_job())
    assert wait_for_job(ml, failed.name)[-1] == "Failed"
    running = ml.jobs.create_or_update(finetuning_job())
    ml.jobs.begin_cancel(running.name).result()
    statuses = wait_for_job(ml, running.name)
    assert "CancelRequested" in statuses and statuses[-1] == "Canceled"
    assert [k for k in fake.models if k[0] == "phi4-mini-ft"] == []


def test_managed_compute_route_is_accepted_anywhere(fake: FakeAzureML) -> None:
    fake.set_workspace_kind("Default")
    fake.location = "swedencentral"  # outside the model's serverless regions
    ml = fake.workspace_client()
    job = finetuning_job(instance_types=["Standard_NC24ads_A100_v4"])
    job_name, model = _finetune(ml, instance_types=["Standard_NC24ads_A100_v4"])
    assert job is not None and model == "phi4-mini-ft"
    sent = fake.jobs[job_name].body["properties"]
    assert sent["resources"] == {"instanceTypes": ["Standard_NC24ads_A100_v4"]}
    fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
    _finetune(ml, compute="gpu-cluster")


def test_serverless_finetuning_needs_a_hub_project(fake: FakeAzureML) -> None:
    from azure.core.exceptions import HttpResponseError

    fake.set_workspace_kind("Default")
    ml = fake.workspace_client()
    with pytest.raises(HttpResponseError) as caught:
        ml.jobs.create_or_update(finetuning_job())
    assert "hub-based project" in str(caught.value)
    assert caught.value.status_code == 400
    assert fake.jobs == {}


def test_serverless_finetuning_is_refused_outside_the_models_regions(fake: FakeAzureML) -> None:
    fake.location = "swedencentral"
    status, body, _ = raw(
        fake, "PUT", "/jobs/ft-region", finetuning_body(), api="2024-10-01-preview"
    )
    assert status == 400
    assert body["error"]["code"] == "ServerlessFineTuningNotSupported"
    assert "swedencentral" in body["error"]["message"] and "eastus2" in body["error"]["message"]
    fake.location = "westus3"
    status, _, _ = raw(fake, "PUT", "/jobs/ft-region", finetuning_body(), api="2024-10-01-preview")
    assert status == 201


@pytest.mark.parametrize(
    ("details", "target", "says"),
    [
        ({"model": None}, "properties.fineTuningDetails.model", "model is required"),
        (
            {
                "model": {
                    "uri": "azureml://registries/azureml/models/No-Such/versions/1",
                    "jobInputType": "mlflow_model",
                }
            },
            "properties.fineTuningDetails.model.uri",
            "was not found",
        ),
        ({"trainingData": None}, "properties.fineTuningDetails.trainingData", "is required"),
        ({"taskType": "Chat"}, "properties.fineTuningDetails.taskType", "ChatCompletion"),
        ({"modelProvider": "OpenAI"}, "properties.fineTuningDetails.modelProvider", "Custom"),
        (
            {"hyperParameters": {"num_train_epochs": 1}},
            "properties.fineTuningDetails.hyperParameters.num_train_epochs",
            "are strings",
        ),
        (
            {"hyperParameters": {"lora_r": "8"}},
            "properties.fineTuningDetails.hyperParameters.lora_r",
            "not accepted by serverless",
        ),
    ],
)
def test_bad_finetuning_requests_get_the_services_error_shape(
    fake: FakeAzureML, details: dict[str, Any], target: str, says: str
) -> None:
    status, body, headers = raw(
        fake, "PUT", "/jobs/ft-bad", finetuning_body(**details), api="2024-10-01-preview"
    )
    assert status == 400
    error = body["error"]
    assert error["target"] == target and says in error["message"]
    assert error["code"] and headers["x-ms-error-code"] == error["code"]
    assert error["details"][0]["target"] == target
    assert fake.jobs == {}


def test_missing_outputs_and_details_are_refused(fake: FakeAzureML) -> None:
    body = finetuning_body()
    del body["properties"]["outputs"]
    status, reply, _ = raw(fake, "PUT", "/jobs/ft-x", body, api="2024-10-01-preview")
    assert status == 400 and reply["error"]["target"] == "properties.outputs"
    body = finetuning_body()
    del body["properties"]["fineTuningDetails"]
    status, reply, _ = raw(fake, "PUT", "/jobs/ft-x", body, api="2024-10-01-preview")
    assert status == 400 and reply["error"]["target"] == "properties.fineTuningDetails"


def test_the_2024_01_view_of_a_job_leaves_out_later_keys(fake: FakeAzureML) -> None:
    fake.set_workspace_kind("Default")
    body = finetuning_body()
    body["properties"]["resources"] = {"instanceTypes": ["Standard_NC24ads_A100_v4"]}
    assert raw(fake, "PUT", "/jobs/ft-v", body, api="2024-10-01-preview")[0] == 201
    _, old, _ = raw(fake, "GET", "/jobs/ft-v", api="2024-01-01-preview")
    _, new, _ = raw(fake, "GET", "/jobs/ft-v", api="2024-10-01-preview")
    assert "resources" not in old["properties"]
    assert new["properties"]["resources"] == {"instanceTypes": ["Standard_NC24ads_A100_v4"]}


# ---------------------------------------------------------------------------- serverless endpoints


def test_notebook_flow_deploys_and_scores_the_finetuned_model(fake: FakeAzureML, ml: Any) -> None:
    _, model_name = _finetune(ml)
    endpoint = _endpoint(ml, "phi4-mini-ft-ep", workspace_model_id(ml, model_name))
    assert endpoint.provisioning_state == "succeeded"
    assert endpoint.scoring_uri == "https://phi4-mini-ft-ep.eastus.models.ai.azure.com"
    assert fake.billable() == ["serverless-endpoint:phi4-mini-ft-ep"]
    got = ml.serverless_endpoints.get("phi4-mini-ft-ep")
    assert got.model_id == workspace_model_id(ml, model_name)
    keys = ml.serverless_endpoints.get_keys("phi4-mini-ft-ep")
    assert (keys.primary_key, keys.secondary_key) == fake.serverless_endpoint_keys(
        "phi4-mini-ft-ep"
    )
    assert keys.primary_key in fake.secrets_issued()
    # the notebook sends the bare key in Authorization
    reply = _chat(got.scoring_uri, {"Authorization": keys.primary_key})
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "echo: hi"}
    assert answer["model"] == model_name
    ml.serverless_endpoints.begin_delete("phi4-mini-ft-ep").result()
    assert fake.billable() == [] and fake.serverless_endpoints == {}


def test_a_finetuned_model_allows_one_serverless_deployment(fake: FakeAzureML, ml: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    _, model_name = _finetune(ml)
    model_id = workspace_model_id(ml, model_name)
    _endpoint(ml, "ft-one", model_id)
    with pytest.raises(ResourceExistsError) as caught:
        _endpoint(ml, "ft-two", model_id)
    assert "one serverless deployment" in str(caught.value) and "ft-one" in str(caught.value)
    assert list(fake.serverless_endpoints) == ["ft-one"]
    _endpoint(ml, "ft-one", model_id)  # the same endpoint again is an update, not a second one


def test_base_model_endpoint_list_pages_and_404_for_missing(fake: FakeAzureML, ml: Any) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    fake.page_size = 1
    unversioned = BASE_MODEL.rsplit("/versions/", 1)[0]
    for name in ("base-a", "base-b", "base-c"):
        _endpoint(ml, name, unversioned)
    assert sorted(e.name for e in ml.serverless_endpoints.list()) == ["base-a", "base-b", "base-c"]
    pages = fake.find_requests("GET", "/serverlessEndpoints", route="serverless.list")
    assert len(pages) == 3 and "$skipToken" in pages[-1].query
    with pytest.raises(ResourceNotFoundError):
        ml.serverless_endpoints.get("no-such-endpoint")
    status, body, _ = raw(fake, "POST", "/serverlessEndpoints/no-such/listKeys")
    assert status == 404 and body["error"]["code"] == "UserError"
    assert raw(fake, "DELETE", "/serverlessEndpoints/no-such")[0] == 204


def test_endpoint_lro_headers_follow_the_spec(fake: FakeAzureML) -> None:
    sent = {
        "properties": {"modelSettings": {"modelId": BASE_MODEL.rsplit("/versions/", 1)[0]}},
        "sku": {"name": "Consumption"},
        "location": "eastus",
    }
    status, body, headers = raw(fake, "PUT", "/serverlessEndpoints/lro-ep", sent)
    assert status == 201 and body["properties"]["provisioningState"] == "Creating"
    assert "azure-asyncoperation" in headers and headers["x-ms-async-operation-timeout"] == "PT1H"
    # a second operation while the first is in progress is refused
    status, body, _ = raw(fake, "DELETE", "/serverlessEndpoints/lro-ep")
    assert status == 409 and body["error"]["details"][0]["code"] == "OperationInProgress"
    for _ in range(fake.lro_polls + 1):
        raw(fake, "GET", "/serverlessEndpoints/lro-ep")
    _, body, _ = raw(fake, "GET", "/serverlessEndpoints/lro-ep")
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert body["properties"]["endpointState"] == "Online"
    status, _, headers = raw(fake, "DELETE", "/serverlessEndpoints/lro-ep")
    assert status == 202
    assert {"location", "retry-after", "x-ms-async-operation-timeout"} <= set(headers)


def test_a_deleted_endpoint_name_stays_reserved(fake: FakeAzureML, ml: Any) -> None:
    unversioned = BASE_MODEL.rsplit("/versions/", 1)[0]
    _endpoint(ml, "reused", unversioned)
    ml.serverless_endpoints.begin_delete("reused").result()
    assert fake.endpoint_name_reserved("reused")
    sent = {"properties": {"modelSettings": {"modelId": unversioned}}, "location": "eastus"}
    status, body, _ = raw(fake, "PUT", "/serverlessEndpoints/reused", sent)
    assert status == 409 and "reserved" in body["error"]["message"]
    fake.release_endpoint_name("reused")
    assert raw(fake, "PUT", "/serverlessEndpoints/reused", sent)[0] == 201


def test_serverless_endpoint_needs_a_hub_project_and_a_valid_name(fake: FakeAzureML) -> None:
    unversioned = BASE_MODEL.rsplit("/versions/", 1)[0]
    sent = {"properties": {"modelSettings": {"modelId": unversioned}}, "location": "eastus"}
    status, body, _ = raw(fake, "PUT", "/serverlessEndpoints/9-starts-with-digit", sent)
    assert status == 400 and body["error"]["target"] == "name"
    status, body, _ = raw(fake, "PUT", "/serverlessEndpoints/no-model", {"properties": {}})
    assert status == 400 and body["error"]["target"] == "properties.modelSettings.modelId"
    fake.set_workspace_kind("Default")
    status, body, _ = raw(fake, "PUT", "/serverlessEndpoints/plain-ws", sent)
    assert status == 400 and "hub-based project" in body["error"]["message"]
    fake.serverless_needs_hub = False
    assert raw(fake, "PUT", "/serverlessEndpoints/plain-ws", sent)[0] == 201


def test_regenerate_keys_sets_the_key_the_request_names(fake: FakeAzureML, ml: Any) -> None:
    # azure-ai-ml 1.35.2's begin_regenerate_keys passes `endpoint_name=` to a client method that
    # wants `name` (TypeError): the route is driven with raw HTTP
    _endpoint(ml, "keys-ep", BASE_MODEL.rsplit("/versions/", 1)[0])
    primary, secondary = fake.serverless_endpoint_keys("keys-ep")
    status, body, _ = raw(
        fake, "POST", "/serverlessEndpoints/keys-ep/regenerateKeys", {"keyType": "Secondary"}
    )
    assert status == 200 and body["primaryKey"] == primary
    assert body["secondaryKey"] != secondary and body["secondaryKey"] in fake.keys_issued
    status, body, _ = raw(
        fake,
        "POST",
        "/serverlessEndpoints/keys-ep/regenerateKeys",
        {"keyType": "Primary", "keyValue": "chosen-key-value"},
    )
    assert status == 200 and body["primaryKey"] == "chosen-key-value"
    uri = ml.serverless_endpoints.get("keys-ep").scoring_uri
    assert _chat(uri, {"api-key": primary}).status_code == 401
    assert _chat(uri, {"api-key": "chosen-key-value"}).status_code == 200
    status, body, _ = raw(
        fake, "POST", "/serverlessEndpoints/keys-ep/regenerateKeys", {"keyType": "Tertiary"}
    )
    assert status == 400 and body["error"]["target"] == "keyType"


# ---------------------------------------------------------------------------- inference


def test_chat_route_auth_streaming_and_errors(fake: FakeAzureML, ml: Any) -> None:
    uri = _endpoint(ml, "chat-ep", BASE_MODEL.rsplit("/versions/", 1)[0]).scoring_uri
    key = fake.serverless_endpoint_keys("chat-ep")[0]
    for headers in ({"Authorization": f"Bearer {key}"}, {"api-key": key}, {"Authorization": key}):
        assert _chat(uri, headers).status_code == 200, headers
    wrong = _chat(uri, {"Authorization": "Bearer not-the-key"})
    assert (
        wrong.status_code == 401 and "invalid subscription key" in wrong.json()["error"]["message"]
    )
    assert _chat(uri, {}).status_code == 401
    streamed = _chat(
        uri,
        {"api-key": key},
        {"messages": [{"role": "user", "content": "two words"}], "stream": True},
    )
    assert streamed.headers["content-type"] == "text/event-stream"
    events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: two words" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    bad = _chat(uri, {"api-key": key}, {"messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    missing = _chat("https://nope.eastus.models.ai.azure.com", {"api-key": key})
    assert missing.status_code == 404
    assert [(e, d) for e, d, _ in fake.scoring_calls] == [("chat-ep", None)] * 4


def test_chat_route_uses_the_fakes_scorer(fake: FakeAzureML, ml: Any) -> None:
    uri = _endpoint(ml, "scored-ep", BASE_MODEL.rsplit("/versions/", 1)[0]).scoring_uri
    fake.set_scorer(lambda payload, deployment: {"output": "scored by the test"})
    reply = _chat(uri, {"api-key": fake.serverless_endpoint_keys("scored-ep")[0]})
    assert reply.json()["choices"][0]["message"]["content"] == "scored by the test"


# ---------------------------------------------------------------------------- marketplace


def test_marketplace_subscription_for_a_third_party_model(fake: FakeAzureML, ml: Any) -> None:
    from azure.ai.ml.entities import MarketplaceSubscription
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    fake.add_model(
        "Llama-2-7b",
        11,
        registry="azureml-meta",
        system_metadata={"publisher": "Meta", "deploymentOptions": ["ServerlessMaaS"]},
    )
    with pytest.raises(HttpResponseError) as caught:
        _endpoint(ml, "llama-ep", LLAMA)
    assert "marketplace subscription" in str(caught.value)
    subscription = MarketplaceSubscription(name="llama-sub", model_id=LLAMA)
    created = ml.marketplace_subscriptions.begin_create_or_update(subscription).result()
    assert created.status == "subscribed" and created.provisioning_state == "succeeded"
    assert [s.name for s in ml.marketplace_subscriptions.list()] == ["llama-sub"]
    assert ml.marketplace_subscriptions.get("llama-sub").model_id == LLAMA
    with pytest.raises(ResourceExistsError):
        ml.marketplace_subscriptions.begin_create_or_update(subscription).result()
    _endpoint(ml, "llama-ep", LLAMA)
    props = fake.serverless_endpoints["llama-ep"]["properties"]
    assert props["marketplaceSubscriptionId"].endswith("/marketplaceSubscriptions/llama-sub")
    ml.marketplace_subscriptions.begin_delete("llama-sub").result()
    assert fake.marketplace_subscriptions == {}


def test_first_party_models_need_no_marketplace_subscription(fake: FakeAzureML, ml: Any) -> None:
    from azure.ai.ml.entities import MarketplaceSubscription
    from azure.core.exceptions import HttpResponseError

    phi = BASE_MODEL.rsplit("/versions/", 1)[0]
    with pytest.raises(HttpResponseError) as caught:
        ml.marketplace_subscriptions.begin_create_or_update(
            MarketplaceSubscription(name="phi-sub", model_id=phi)
        ).result()
    assert caught.value.status_code == 400
    assert "needs no marketplace subscription" in str(caught.value)
    assert fake.marketplace_subscriptions == {}
    status, body, _ = raw(fake, "GET", "/marketplaceSubscriptions/phi-sub")
    assert status == 404 and body["error"]["code"] == "UserError"
    assert raw(fake, "DELETE", "/marketplaceSubscriptions/phi-sub")[0] == 204


# ---------------------------------------------------------------------------- workspace kind


def test_workspace_kind_and_location_knobs(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    project = ml.workspaces.get(ml.workspace_name)
    assert type(project).__name__ == "Project"
    assert project.hub_id.endswith("/workspaces/hub-phi-fake")
    fake.set_workspace_kind("Default")
    fake.location = "westus3"
    plain = ml.workspaces.get(ml.workspace_name)
    assert type(plain).__name__ == "Workspace" and plain.location == "westus3"
    with pytest.raises(ValueError, match="use 'Default', 'Project' or 'Hub'"):
        fake.set_workspace_kind("Lab")  # type: ignore[arg-type]


def test_a_model_without_serverless_regions_is_refused(fake: FakeAzureML) -> None:
    fake.add_serverless_model("Phi-no-maas-ft", 1, deploy_regions=None)
    model = {
        "uri": "azureml://registries/azureml/models/Phi-no-maas-ft/versions/1",
        "jobInputType": "mlflow_model",
    }
    status, body, _ = raw(
        fake, "PUT", "/jobs/ft-nomaas", finetuning_body(model=model), api="2024-10-01-preview"
    )
    assert status == 400 and "does not support serverless fine-tuning" in body["error"]["message"]


def test_a_job_on_a_cluster_short_of_quota_waits_queued(fake: FakeAzureML, ml: Any) -> None:
    fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
    fake.set_usage("standardNCADSA100v4Family", 200, 200)
    created = ml.jobs.create_or_update(finetuning_job(compute="gpu-cluster"))
    early = [
        str(getattr(s, "value", s)) for s in (ml.jobs.get(created.name).status for _ in range(6))
    ]
    assert early[-1] == "Queued" and "Running" not in early
    fake.set_usage("standardNCADSA100v4Family", 0, 200)
    assert wait_for_job(ml, created.name)[-1] == "Completed"
