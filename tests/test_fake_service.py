"""FakeAzureML core: lifecycle, credential, workspace, compute, registry, faults, whole flow."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from azure.ai.ml import MLClient
from azure.ai.ml.entities import AmlCompute
from azure.ai.ml.exceptions import ValidationException
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport

from phi_finetune.testing import FakeAzureML, autospec_ml_client

WS_PATH = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-phi-fake"
    "/providers/Microsoft.MachineLearningServices/workspaces/ws-phi-fake"
)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ---------------------------------------------------------------------------- lifecycle


def test_context_manager_patches_and_restores_transport() -> None:
    original_send = RequestsTransport.send
    original_sleep = RequestsTransport.sleep
    os.environ["AZUREML_CURRENT_CLOUD"] = "AzureCloud"
    try:
        with FakeAzureML() as fake:
            assert fake.active
            assert RequestsTransport.send is not original_send
            assert "AZUREML_CURRENT_CLOUD" not in os.environ
            from azure.ai.ml.operations._run_history_constants import RunHistoryConstants

            assert RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN == 0
            assert RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX == 0
        assert not fake.active
        assert RequestsTransport.send is original_send
        assert RequestsTransport.sleep is original_sleep
        assert os.environ["AZUREML_CURRENT_CLOUD"] == "AzureCloud"
    finally:
        os.environ.pop("AZUREML_CURRENT_CLOUD", None)


def test_only_one_fake_active_at_a_time(fake_azureml: FakeAzureML) -> None:
    with pytest.raises(RuntimeError, match="already active"), FakeAzureML():
        pass
    assert fake_azureml.active


def test_clients_need_an_active_fake() -> None:
    with pytest.raises(RuntimeError, match="not active"):
        FakeAzureML().workspace_client()


def test_credential_tokens_are_jwts_with_exact_audience(fake_azureml: FakeAzureML) -> None:
    cred = fake_azureml.credential()
    ml_token = cred.get_token("https://ml.azure.com/.default").token
    assert _claims(ml_token)["aud"] == "https://ml.azure.com"
    mgmt = cred.get_token_info("https://management.azure.com/.default")
    assert _claims(mgmt.token)["aud"] == "https://management.azure.com"
    assert mgmt.expires_on > time.time()
    assert "https://ml.azure.com/.default" in cred.scopes_requested


def test_plugin_fixture_is_active_and_default_names(fake_azureml: FakeAzureML) -> None:
    assert fake_azureml.active
    assert fake_azureml.subscription_id == "00000000-0000-0000-0000-000000000001"
    assert fake_azureml.resource_group == "rg-phi-fake"
    assert fake_azureml.workspace_name == "ws-phi-fake"
    assert fake_azureml.location == "eastus"


# ---------------------------------------------------------------------------- workspace & compute


def test_workspace_get_and_recorded_request(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    assert isinstance(ml, MLClient)
    ws = ml.workspaces.get(fake_azureml.workspace_name)
    assert ws.name == "ws-phi-fake"
    assert ws.location == "eastus"
    assert ws.discovery_url == fake_azureml.discovery_url
    (req,) = fake_azureml.find_requests("GET", route="workspace.get")
    assert req.host == "management.azure.com"
    assert req.path == WS_PATH
    assert "api-version" in req.query
    assert req.headers["Authorization"] == "***"
    assert fake_azureml.unrouted == []


def test_compute_get(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4", max_instances=2)
    ml = fake_azureml.workspace_client()
    compute = ml.compute.get("gpu-cluster")
    assert isinstance(compute, AmlCompute)
    assert compute.size == "STANDARD_NC24ADS_A100_V4"  # the service upper-cases it
    assert compute.max_instances == 2
    assert compute.provisioning_state == "Succeeded"
    (req,) = fake_azureml.find_requests("GET", "/computes/gpu-cluster")
    assert req.path == f"{WS_PATH}/computes/gpu-cluster"


def test_compute_failed_state_is_reported(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("broken", "Standard_NC6s_v3", state="Failed")
    ml = fake_azureml.workspace_client()
    assert ml.compute.get("broken").provisioning_state == "Failed"


def test_compute_not_found(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    with pytest.raises(ResourceNotFoundError):
        ml.compute.get("missing")


def test_compute_create_is_a_long_running_operation(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    cluster = AmlCompute(name="new-gpu", size="Standard_NC6s_v3", min_instances=0, max_instances=3)
    result = ml.compute.begin_create_or_update(cluster).result()
    assert result.name == "new-gpu"
    assert result.size == "STANDARD_NC6S_V3"
    assert result.max_instances == 3
    assert fake_azureml.computes["new-gpu"]["properties"]["provisioningState"] == "Succeeded"
    (put,) = fake_azureml.find_requests("PUT", "/computes/new-gpu")
    assert put.json["properties"]["computeType"] == "AmlCompute"
    assert put.json["properties"]["properties"]["vmSize"] == "Standard_NC6s_v3"
    assert fake_azureml.find_requests("GET", route="operation.status")


def test_list_sizes_has_the_camelcase_quirk(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_vm_size("Standard_Custom_v9", 12, 3, "customFamily", 64.0)
    ml = fake_azureml.workspace_client()
    sizes = {s.name: s for s in ml.compute.list_sizes()}
    custom = sizes["Standard_Custom_v9"]
    assert custom.gpus == 3
    assert custom.family == "customFamily"
    assert custom.__dict__["vCPUs"] == 12
    assert custom.__dict__["memoryGB"] == 64.0
    assert "Standard_NC6s_v3" in sizes
    (req,) = fake_azureml.find_requests("GET", "/vmSizes")
    assert "/locations/eastus/" in req.path


def test_list_usage_has_the_camelcase_quirk(fake_azureml: FakeAzureML) -> None:
    fake_azureml.set_usage("standardNCSv3Family", 12, 24)
    fake_azureml.set_usage("standardDSv2Family", 1, 8, naming="key")
    ml = fake_azureml.workspace_client()
    usages = {u.name["value"]: u for u in ml.compute.list_usage()}
    usage = usages["Standard NCSv3 Family Cluster Dedicated vCPUs"]  # the display form
    assert usage.__dict__["currentValue"] == 12
    assert usage.limit == 24
    assert usages["standardDSv2Family"].limit == 8  # the key form, on request
    assert fake_azureml.find_requests("GET", "/usages")


# ---------------------------------------------------------------------------- registry


def test_registry_client_discovery(fake_azureml: FakeAzureML) -> None:
    reg = fake_azureml.registry_client()
    assert isinstance(reg, MLClient)
    (req,) = fake_azureml.find_requests("GET", "/registries/azureml/discovery")
    assert req.host == "eastus.api.azureml.ms"


def test_unknown_registry_fails_discovery(fake_azureml: FakeAzureML) -> None:
    with pytest.raises(ResourceNotFoundError):
        fake_azureml.registry_client("no-such-registry")


def test_registry_model_by_version_with_tags_and_system_metadata(fake_azureml: FakeAzureML) -> None:
    reg = fake_azureml.registry_client()
    model = reg.models.get("Phi-3-mini-4k-instruct", version="15")
    assert model.name == "Phi-3-mini-4k-instruct"
    assert model.version == "15"
    assert "finetune_compute_allow_list" not in model.tags  # only in system metadata
    assert "model_specific_defaults" in model.tags
    assert model.id == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"
    # azure-ai-ml 1.35.2 does not copy system metadata onto the entity; the REST body has it.
    raw = reg.models._get("Phi-3-mini-4k-instruct", "15")
    computes = raw["properties"]["system_metadata"]["supportedComputes"]
    assert "Standard_NC24ads_A100_v4" in computes["finetuneComputes"]
    (req,) = fake_azureml.find_requests("GET", "/models/Phi-3-mini-4k-instruct/versions/15")[:1]
    assert req.path.startswith("/mferp/managementfrontend/")
    assert req.query["api-version"] == "2021-10-01-dataplanepreview"


def test_registry_model_latest_label(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_model("my-base", 1, tags={"a": "1"})
    fake_azureml.add_model("my-base", 2, tags={"a": "2"})
    reg = fake_azureml.registry_client()
    assert reg.models.get("my-base", label="latest").version == "2"
    (listing,) = fake_azureml.find_requests("GET", "/models/my-base/versions")[:1]
    assert listing.query["$top"] == "1"


def test_archived_model_latest_is_not_found_but_version_works(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_model("old-model", 3, archived=True)
    reg = fake_azureml.registry_client()
    with pytest.raises(ValidationException):
        reg.models.get("old-model", label="latest")
    assert reg.models._get("old-model", "3")["properties"]["isArchived"] is True
    assert reg.models.get("old-model", version="3").version == "3"


def test_registry_model_not_found(fake_azureml: FakeAzureML) -> None:
    reg = fake_azureml.registry_client()
    with pytest.raises(ResourceNotFoundError):
        reg.models.get("nope", version="1")
    with pytest.raises(ValidationException):
        reg.models.get("nope", label="latest")


def test_default_chat_completion_component(fake_azureml: FakeAzureML) -> None:
    reg = fake_azureml.registry_client()
    by_label = reg.components.get("chat_completion_pipeline", label="latest")
    by_version = reg.components.get("chat_completion_pipeline", version="0.0.82")
    assert by_label.version == by_version.version == "0.0.82"
    inputs = by_version.inputs
    assert len(inputs) == 69
    assert inputs["task_name"].optional is False
    assert inputs["optim"].enum == ["adamw_torch", "adafactor"]
    assert inputs["deepspeed_stage"].enum == ["2", "3"]
    assert inputs["num_train_epochs"].min == 1
    assert set(by_version.outputs) == {"pytorch_model_folder", "mlflow_model_folder"}


def test_custom_component(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_component(
        "tiny_pipeline", "1.0.0", inputs={"epochs": {"type": "integer", "default": 1}}
    )
    reg = fake_azureml.registry_client()
    component = reg.components.get("tiny_pipeline", version="1.0.0")
    assert list(component.inputs) == ["epochs"]


# ---------------------------------------------------------------------------- faults


def test_transient_503_is_retried_and_succeeds(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    fault = fake_azureml.inject_fault("GET", r"/computes/gpu", status=503, times=2)
    ml = fake_azureml.workspace_client()
    assert ml.compute.get("gpu").name == "gpu"
    assert fault.hits == 2
    statuses = [r.status for r in fake_azureml.find_requests("GET", "/computes/gpu")]
    assert statuses == [503, 503, 200]


def test_429_retry_after_is_honoured_without_sleeping(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    fake_azureml.inject_fault("GET", r"/computes/gpu", status=429, retry_after=7)
    ml = fake_azureml.workspace_client()
    started = time.monotonic()
    assert ml.compute.get("gpu").name == "gpu"
    assert time.monotonic() - started < 5
    assert 7.0 in fake_azureml.sleeps


def test_connection_reset_is_retried_for_get(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    fake_azureml.inject_fault("GET", r"/computes/gpu", connection_reset=True, times=1)
    ml = fake_azureml.workspace_client()
    assert ml.compute.get("gpu").name == "gpu"
    routes = [r.route for r in fake_azureml.find_requests("GET", "/computes/gpu")]
    assert routes == ["fault", "compute.get"]


def test_connection_reset_on_post_is_not_retried(fake_azureml: FakeAzureML) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml = fake_azureml.workspace_client()
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep-reset")).result()
    fake_azureml.inject_fault("POST", r"/listKeys", connection_reset=True, times=None)
    with pytest.raises(ServiceResponseError):
        ml.online_endpoints.get_keys("ep-reset")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, HttpResponseError),
        (403, HttpResponseError),
        (404, ResourceNotFoundError),
        (409, ResourceExistsError),
    ],
)
def test_permanent_errors_raise_azure_exceptions(
    fake_azureml: FakeAzureML, status: int, error: type[Exception]
) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    fake_azureml.inject_fault("GET", r"/computes/gpu", status=status, message="nope")
    ml = fake_azureml.workspace_client()
    with pytest.raises(error) as info:
        ml.compute.get("gpu")
    assert isinstance(info.value, HttpResponseError)
    assert info.value.status_code == status
    assert "nope" in str(info.value)
    assert len(fake_azureml.find_requests("GET", "/computes/gpu")) == 1


def test_fault_body_is_azure_shaped_or_custom(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    fake_azureml.inject_fault("GET", r"/computes/gpu", status=400, code="BadThing")
    ml = fake_azureml.workspace_client()
    with pytest.raises(HttpResponseError) as info:
        ml.compute.get("gpu")
    assert info.value.error is not None
    assert info.value.error.code == "BadThing"
    fake_azureml.inject_fault("GET", r"/computes/gpu", status=400, body={"custom": True})
    with pytest.raises(HttpResponseError):
        ml.compute.get("gpu")


def test_permanent_fault_times_none_always_fails(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    fake_azureml.inject_fault("GET", r"/computes/gpu", status=500, times=None)
    ml = fake_azureml.workspace_client()
    with pytest.raises(HttpResponseError):
        ml.compute.get("gpu")
    assert len(fake_azureml.find_requests("GET", "/computes/gpu")) > 1
    fake_azureml.clear_faults()
    assert ml.compute.get("gpu").name == "gpu"


# ---------------------------------------------------------------------------- misc


def test_unrouted_requests_get_501_and_are_listed(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    with pytest.raises(HttpResponseError) as info:
        ml.environments.get("some-env", version="1")
    assert info.value.status_code == 501
    assert fake_azureml.unrouted


def test_autospec_ml_client_checks_signatures() -> None:
    from azure.ai.ml.operations import ModelOperations

    ml = autospec_ml_client()
    ml.models.get("m", version="1")
    ml.models.get.assert_called_once_with("m", version="1")
    with pytest.raises(TypeError):
        ml.models.get("m", bogus=True)
    with pytest.raises(TypeError):
        ml.online_endpoints.begin_create_or_update()
    for name in (
        "components",
        "compute",
        "jobs",
        "online_endpoints",
        "online_deployments",
        "data",
        "workspaces",
    ):
        assert hasattr(getattr(ml, name), "_spec_class")
    assert ml.models._spec_class is ModelOperations
    with pytest.raises(AttributeError):
        ml.models.no_such_method  # noqa: B018


def test_import_phi_finetune_does_not_import_azure() -> None:
    import subprocess
    import sys

    code = (
        "import sys, phi_finetune, phi_finetune.testing.pytest_plugin;"
        "print(any(m.startswith('azure') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_network_is_used(fake_azureml: FakeAzureML, block_network: list[str]) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC6s_v3")
    ml = fake_azureml.workspace_client()
    ml.compute.get("gpu")
    list(ml.compute.list_sizes())
    fake_azureml.registry_client().models.get("Phi-4", label="latest")
    assert block_network == []


# ------------------------------------------------------------ credentials and redaction (D)


def test_request_log_redacts_every_credential_header_and_sas_signature(
    fake_azureml: FakeAzureML,
) -> None:
    import requests

    fake = fake_azureml
    secret = "s3cr3t-value-0123456789"
    headers = {
        "Authorization": f"Bearer {secret}",
        "x-azureml-token": secret,
        "api-key": secret,
        "Ocp-Apim-Subscription-Key": secret,
        "x-ms-storage-token": secret,
        "Cookie": f"session={secret}",
        "x-ms-version": "2023-11-03",
    }
    url = (
        f"{fake.blob_account_url.rstrip('/')}/azureml/some/file.txt?sv=2026-01-01&sr=b&sig={secret}"
    )
    body = json.dumps({"sasUri": f"https://a.blob.core.windows.net/c?sv=1&sig={secret}"})
    requests.put(url, data=body.encode(), headers=headers, timeout=5)

    (req,) = fake.requests
    assert secret not in repr(req) and secret not in req.url and secret not in req.text
    assert secret not in json.dumps(req.headers) and secret not in json.dumps(req.query)
    assert secret not in json.dumps(req.json)
    assert req.headers["x-ms-version"] == "2023-11-03"  # ordinary headers are kept
    for name in ("Authorization", "x-azureml-token", "api-key", "Ocp-Apim-Subscription-Key"):
        assert req.headers[name] == "***"
    assert req.query["sig"] == "***" and "sig=***" in req.url
    assert req.route is not None  # answered by a route, not refused


def test_job_submission_token_is_redacted_in_the_log(fake_azureml: FakeAzureML) -> None:
    """azure-ai-ml sends x-azureml-token (an ml.azure.com token) with a pipeline job create."""
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    fake = fake_azureml
    fake.add_compute("gpu", "Standard_NC24ads_A100_v4")
    ml = fake.workspace_client()
    component = fake.registry_client().components.get("chat_completion_pipeline", label="latest")
    model = fake.registry_client().models.get("Phi-4", label="latest")

    @pipeline(name="redaction")  # type: ignore[misc]
    def build() -> Any:
        node = component(
            mlflow_model_path=model.id,
            compute_model_import="gpu",
            compute_preprocess="gpu",
            compute_finetune="gpu",
            compute_model_evaluation="gpu",
            train_file_path=Input(type="uri_file", path="azureml://datastores/d/paths/t.jsonl"),
            test_file_path=Input(type="uri_file", path="azureml://datastores/d/paths/v.jsonl"),
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    ml.jobs.create_or_update(build(), experiment_name="e")
    (create,) = fake.find_requests("PUT", route="jobs.create")
    assert create.headers.get("x-azureml-token") == "***"
    log = repr(fake.requests) + json.dumps([r.headers for r in fake.requests])
    for secret in fake.secrets_issued():
        assert secret not in log


def test_expired_sign_in_gets_401_with_a_bearer_challenge(fake_azureml: FakeAzureML) -> None:
    fake = fake_azureml
    fake.add_compute("gpu", "Standard_NC6s_v3")
    ml = fake.workspace_client()
    assert ml.compute.get("gpu").size.lower() == "standard_nc6s_v3"  # GET upper-cases it
    fake.credential().expire()  # the cached token is refused from now on
    with pytest.raises(HttpResponseError) as caught:
        ml.compute.get("gpu")
    assert caught.value.status_code == 401
    challenge = caught.value.response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert "ExpiredAuthenticationToken" in str(caught.value)
    (denied,) = fake.find_requests(route="auth.denied")
    assert denied.status == 401 and denied.headers["Authorization"] == "***"
    fake.credential().renew()
    fresh = fake.workspace_client()  # a new client asks for a new token: valid again
    assert fresh.compute.get("gpu").name == "gpu"


def test_wrong_audience_and_missing_token_get_401(fake_azureml: FakeAzureML) -> None:
    import requests

    from phi_finetune.testing import make_jwt

    fake = fake_azureml
    url = (
        f"https://management.azure.com/subscriptions/{fake.subscription_id}/resourceGroups/"
        f"{fake.resource_group}/providers/Microsoft.MachineLearningServices/workspaces/"
        f"{fake.workspace_name}?api-version=2024-10-01-preview"
    )
    storage = make_jwt("https://storage.azure.com")
    wrong = requests.get(url, headers={"Authorization": f"Bearer {storage}"}, timeout=5)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    assert "https://management.azure.com" in wrong.json()["error"]["message"]
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "AuthenticationFailed"
    stale = make_jwt("https://management.azure.com", lifetime_s=-10)
    expired = requests.get(url, headers={"Authorization": f"Bearer {stale}"}, timeout=5)
    assert expired.json()["error"]["code"] == "ExpiredAuthenticationToken"
    good = make_jwt("https://management.azure.com")
    assert requests.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=5).ok
    fake.check_tokens = False  # the knob: no token checks
    assert requests.get(url, timeout=5).ok


def test_expire_after_counts_tokens() -> None:
    from phi_finetune.testing import FakeCredential

    credential = FakeCredential()
    credential.expire_after(2)
    first = credential.get_token("https://management.azure.com/.default").token
    credential.get_token("https://management.azure.com/.default")
    assert not credential.expired and not credential.is_revoked(first)
    third = credential.get_token("https://management.azure.com/.default").token
    assert credential.expired and credential.is_revoked(first) and credential.is_revoked(third)
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        credential.expire_after(-1)


def test_run_against_a_credential_that_expires_mid_run_sees_a_401(
    fake_azureml: FakeAzureML, tmp_path: Any
) -> None:
    from phi_finetune.azure.backend import AzureBackend
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.config import DataConfig, RunConfig
    from phi_finetune.session import FineTuneSession

    fake = fake_azureml
    workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())

    def expire_while_scoring(request: Any, deployment: str | None) -> Any:
        fake.credential().expire()  # the sign-in lapses between scoring and teardown
        return {"output": "ok"}

    fake.set_scorer(expire_while_scoring)
    config = RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
    )
    session = FineTuneSession(config, backend=AzureBackend(workspace=workspace, poll_interval_s=0))
    with pytest.raises(Exception):  # noqa: B017  (which error the library raises is not ours)
        session.run()
    denied = fake.find_requests(route="auth.denied")
    assert denied and all(r.status == 401 for r in denied)
    assert fake.scoring_calls  # it got that far before the token was refused
