"""EndpointDeployer: checks before any request, deploy/fail/cleanup through the real SDK."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests

from phi_finetune.azure.deployer import (
    DeploymentSpec,
    EndpointDeployer,
    check_instance_type,
    parse_allow_list,
)
from phi_finetune.azure.registrar import ModelRegistrar, RegisteredModel
from phi_finetune.backends import JournalObserver
from phi_finetune.config import DeployConfig
from phi_finetune.endpoint import Endpoint
from phi_finetune.errors import (
    ComputeNotAllowedError,
    ConfigurationError,
    DeploymentError,
    EndpointError,
    InvalidNameError,
    WaitTimeoutError,
)
from phi_finetune.journal import Journal
from phi_finetune.names import derive_endpoint_name
from phi_finetune.observer import NullObserver
from phi_finetune.testing import FakeAzureML, autospec_ml_client

MODEL = RegisteredModel(name="phi-ultrachat", version="1")
USER = [{"role": "user", "content": "hello there"}]


def test_allow_list_parsing_and_check() -> None:
    assert parse_allow_list("['Standard_NC6s_v3', 'Standard_NC24s_v3']") == [
        "Standard_NC6s_v3",
        "Standard_NC24s_v3",
    ]
    assert parse_allow_list("a, b") == ["a", "b"]
    assert parse_allow_list(None) is None and parse_allow_list("") is None
    assert check_instance_type("standard_nc6s_V3", ["Standard_NC6s_v3"]) == "standard_nc6s_V3"
    with pytest.raises(ComputeNotAllowedError, match=r"Standard_NC24s_v3.*instance_type"):
        check_instance_type("Standard_NC6", "['Standard_NC24s_v3']")
    with pytest.raises(ConfigurationError):
        parse_allow_list("[broken")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"endpoint_name": "1-bad"}, InvalidNameError),
        ({"deployment_name": "x"}, InvalidNameError),
        ({"inference_allow_list": ["Standard_NC24s_v3"]}, ComputeNotAllowedError),
        ({"instance_count": 0}, ConfigurationError),
        ({"request_timeout_ms": 500_000}, ConfigurationError),
        ({"liveness_initial_delay": -1}, ConfigurationError),
        ({"wait_timeout_s": 0}, ConfigurationError),
    ],
)
def test_bad_input_is_refused_before_any_call(kwargs: dict[str, Any], error: type) -> None:
    ml = autospec_ml_client()
    with pytest.raises(error):
        EndpointDeployer(ml).deploy(MODEL, **kwargs)
    assert ml.online_endpoints.method_calls == [] and ml.online_deployments.method_calls == []


def test_bad_model_reference() -> None:
    with pytest.raises(ConfigurationError, match="model"):
        EndpointDeployer(autospec_ml_client()).deploy("just-a-name")


def test_entities_built_like_the_reference_with_autospec() -> None:
    from azure.core.exceptions import ResourceNotFoundError

    ml = autospec_ml_client()
    ml.online_endpoints.get.side_effect = [
        ResourceNotFoundError("no"),  # free-name check
        # (no read before the traffic update: the endpoint's create reply is used)
        type(
            "E",
            (),
            {"scoring_uri": "https://x/score", "traffic": {"blue": 100}, "auth_mode": "key"},
        )(),
    ]
    ml.online_deployments.get.return_value = type("D", (), {"provisioning_state": "Succeeded"})()
    ml.online_endpoints.get_keys.return_value = type("K", (), {"primary_key": "pk-123456"})()
    endpoint = EndpointDeployer(ml).deploy(
        "name:3",
        endpoint_name="my-endpoint",
        deployment_name="blue",
        instance_type="Standard_NC6s_v3",  # the reference notebook's (now retired) size
        instance_count=2,
        liveness_initial_delay=900,
        request_timeout_ms=60000,
    )
    created = ml.online_endpoints.begin_create_or_update.call_args_list[0].args[0]
    assert created.name == "my-endpoint" and created.auth_mode == "key"
    deployment = ml.online_deployments.begin_create_or_update.call_args.args[0]
    assert deployment.model == "azureml:name:3"
    assert deployment.instance_type == "Standard_NC6s_v3" and deployment.instance_count == 2
    assert deployment.liveness_probe.initial_delay == 900
    assert deployment.request_settings.request_timeout_ms == 60000
    updated = ml.online_endpoints.begin_create_or_update.call_args_list[1].args[0]
    assert updated.traffic == {"blue": 100}
    assert endpoint.deployment_name == "blue" and "pk-123456" not in repr(endpoint)


@pytest.fixture
def fake() -> Any:
    with FakeAzureML() as service:
        service.add_completed_job("job_1")  # the models below come from its output
        yield service


def _model(fake: Any) -> RegisteredModel:
    return ModelRegistrar(fake.workspace_client(), check_job_output=False).register(
        "job_1", base_model="Phi-3-mini-4k-instruct", version=1
    )


def test_deploy_success_records_before_waiting_and_scores(fake: Any, tmp_path: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    journal = Journal.create(tmp_path, backend="azure")
    seen: list[tuple[str, str, int]] = []

    class Seen(NullObserver):
        def created(self, kind: str, name: str, *args: Any, **kwargs: Any) -> None:
            # the resource is journaled as soon as the service accepted it
            journal.record_resource(kind, name, state="created")
            seen.append((kind, name, len(fake.find_requests("PUT"))))

    endpoint = EndpointDeployer(ml, poll_interval_s=0.01).deploy(
        model,
        observer=Seen(),
        run_id=journal.run_id,
        instance_type="Standard_NC6s_v3",
        inference_allow_list=["STANDARD_NC6S_V3"],
    )
    assert endpoint.name.startswith("ultrachat-completion-")
    assert list(fake.endpoints) == [endpoint.name]
    assert (endpoint.name, "demo") in fake.deployments
    assert [k for k, _, _ in seen] == ["endpoint", "deployment"]
    assert {r.kind for r in journal.resources(alive_only=True)} == {"endpoint", "deployment"}
    body = fake.endpoints[endpoint.name]
    assert json.dumps(body).count(journal.run_id) >= 1
    scorer_endpoint = type(endpoint)(
        endpoint.name,
        endpoint.scoring_uri,
        fake.endpoint_keys(endpoint.name)[0],
        deployment_name="demo",
        session=requests.Session(),
    )
    assert scorer_endpoint.invoke(USER).text
    endpoint.delete()
    endpoint.delete()  # idempotent
    assert fake.endpoints == {}


def test_existing_endpoint_is_not_overwritten(fake: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    deployer = EndpointDeployer(ml, poll_interval_s=0.01)
    first = deployer.deploy(model, endpoint_name="taken-name")
    before = dict(fake.endpoints["taken-name"])
    # Taken by something this run did not create: a new, derived name; the old one untouched.
    other = deployer.deploy(model, endpoint_name="taken-name", run_id="run-2")
    assert other.name != first.name and other.name.startswith("taken-name-")
    assert fake.endpoints["taken-name"] == before
    # The suffix is deterministic: the same run derives the same name.
    assert other.name == derive_endpoint_name("taken-name", "run-2", 1)
    again = deployer.deploy(model, endpoint_name="taken-name", reuse_endpoint=True)
    assert again.name == first.name and len(fake.endpoints) == 2


def test_failed_deployment_leaves_no_endpoint_and_carries_logs(fake: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    fake.script_deployment("Failed", logs=["Loading model", "CUDA out of memory"])
    deleted: list[tuple[str, str]] = []

    class Deletions(NullObserver):
        def deleted(self, kind: str, name: str, version: str | None = None) -> None:
            deleted.append((kind, name))

    with pytest.raises(DeploymentError, match="was deleted") as info:
        EndpointDeployer(ml, poll_interval_s=0.01).deploy(model, observer=Deletions())
    assert "CUDA out of memory" in info.value.log_lines
    assert "CUDA out of memory" in str(info.value)
    assert fake.endpoints == {}
    assert {k for k, _ in deleted} == {"endpoint", "deployment"}


def test_failed_deployment_kept_on_request(fake: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    fake.script_deployment("Failed")
    with pytest.raises(DeploymentError, match="kept"):
        EndpointDeployer(ml, poll_interval_s=0.01).deploy(
            model, endpoint_name="keep-me", keep_on_failure=True
        )
    assert list(fake.endpoints) == ["keep-me"]


def test_wait_is_bounded(fake: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    fake.script_deployment("Succeeded", polls=10_000)
    ticks = iter(range(0, 10_000, 50))
    deployer = EndpointDeployer(ml, poll_interval_s=0.001, clock=lambda: float(next(ticks)))
    with pytest.raises(WaitTimeoutError, match="wait_timeout_s"):
        deployer.deploy(model, endpoint_name="slow-one", wait_timeout_s=100)
    assert fake.endpoints == {}


def test_bad_names_send_no_request(fake: Any) -> None:
    ml = fake.workspace_client()
    fake.clear_requests()
    with pytest.raises(InvalidNameError):
        EndpointDeployer(ml).deploy(MODEL, endpoint_name="ab")
    with pytest.raises(InvalidNameError):
        Endpoint.from_name(ml, "no_underscores")
    with pytest.raises(InvalidNameError), pytest.warns(DeprecationWarning):
        EndpointDeployer(ml).attach("no_underscores")
    assert fake.requests == []


def test_attach_and_missing_endpoint(fake: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    deployer = EndpointDeployer(ml, poll_interval_s=0.01)
    made = deployer.deploy(model, endpoint_name="attach-me")
    handle = Endpoint.from_name(ml, "attach-me")
    assert handle.deployment_name == "demo" and handle.scoring_uri == made.scoring_uri
    assert "Model loaded" in handle.logs(5)
    with pytest.warns(DeprecationWarning, match="from_name"):
        assert deployer.attach("attach-me").scoring_uri == made.scoring_uri
    with pytest.raises(EndpointError, match="does not exist"):
        Endpoint.from_name(ml, "not-there")
    assert deployer.exists("attach-me")
    assert deployer.delete("attach-me") is None
    assert not deployer.exists("attach-me") and fake.endpoints == {}
    assert deployer.delete("attach-me") is None  # already gone: still fine


def test_spec_defaults_come_from_the_deploy_config() -> None:
    config = DeployConfig()
    spec = DeploymentSpec()
    for name in (
        "endpoint_name",
        "deployment_name",
        "instance_type",
        "instance_count",
        "liveness_initial_delay",
        "request_timeout_ms",
    ):
        assert getattr(spec, name) == getattr(config, name), name
    custom = DeployConfig(
        instance_type="Standard_NC24s_v3", instance_count=2, endpoint_name="my-endpoint"
    )
    built = DeploymentSpec.from_config(custom, inference_allow_list="a, Standard_NC24s_v3")
    assert built.instance_type == "Standard_NC24s_v3" and built.instance_count == 2
    assert built.endpoint_name == "my-endpoint"
    assert built.inference_allow_list == ("a", "Standard_NC24s_v3")
    assert built.wait_timeout_s == custom.wait_timeout_s
    built.check()
    with pytest.raises(ComputeNotAllowedError):
        DeploymentSpec(
            instance_type="Standard_NC6s_v3", inference_allow_list=["Standard_NC24s_v3"]
        ).check()


def test_unknown_deploy_setting_is_named() -> None:
    ml = autospec_ml_client()
    with pytest.raises(ConfigurationError, match=r"instance_typo.*instance_type") as info:
        EndpointDeployer(ml).deploy(MODEL, instance_typo="Standard_NC6s_v3")
    assert info.value.key == "instance_typo"
    assert ml.online_endpoints.method_calls == []


def test_begin_deploy_returns_a_handle_with_status_wait_result(fake: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    spec = DeploymentSpec(endpoint_name="handle-one", instance_count=1)
    handle = EndpointDeployer(ml, poll_interval_s=0.01).begin_deploy(model, spec)
    assert handle.endpoint_name == "handle-one" and handle.deployment_name == "demo"
    assert "handle-one" in fake.endpoints  # the create request is sent by begin_deploy
    assert not handle.done()
    assert handle.status() == "InProgress"  # the endpoint is ready, the deployment not yet
    endpoint = handle.result()
    assert handle.done() and handle.status() == "Succeeded"
    assert handle.result() is endpoint  # the result is kept, nothing is deployed again
    handle.wait()
    assert endpoint.name == "handle-one" and ("handle-one", "demo") in fake.deployments
    assert fake.deployments[("handle-one", "demo")]["sku"]["capacity"] == 1


def test_failed_handle_raises_again_and_says_failed(fake: Any) -> None:
    ml = fake.workspace_client()
    fake.script_deployment("Failed")
    handle = EndpointDeployer(ml, poll_interval_s=0.01).begin_deploy(
        _model(fake), endpoint_name="fails-once"
    )
    with pytest.raises(DeploymentError):
        handle.result()
    with pytest.raises(DeploymentError):
        handle.wait()
    assert handle.done() and handle.status() == "Failed"


def test_transient_scoring_errors_are_retried_through_the_fake(fake: Any) -> None:
    ml = fake.workspace_client()
    endpoint = EndpointDeployer(ml, poll_interval_s=0.01).deploy(
        _model(fake), endpoint_name="busy-one"
    )
    fake.inject_fault(
        "POST", r"inference\.ml\.azure\.com/score", status=429, retry_after=2, times=1
    )
    fake.inject_fault("POST", r"inference\.ml\.azure\.com/score", status=503, times=1)
    sleeps: list[float] = []
    scorer = type(endpoint)(
        endpoint.name,
        endpoint.scoring_uri,
        fake.endpoint_keys(endpoint.name)[0],
        deployment_name="demo",
        session=requests.Session(),
        sleep=sleeps.append,
    )
    assert scorer.invoke(USER).text
    assert sleeps[0] == 2 and len(sleeps) == 2
    fake.set_scorer(shape="list")
    assert scorer.invoke(USER).shape == "indexed"


def test_no_key_in_logs_reprs_or_journal(
    fake: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    ml = fake.workspace_client()
    journal = Journal.create(tmp_path, backend="azure")
    endpoint = EndpointDeployer(ml, poll_interval_s=0.01).deploy(
        _model(fake),
        endpoint_name="secret-check",
        observer=JournalObserver(journal),
    )
    keys = fake.endpoint_keys("secret-check")
    endpoint._session = requests.Session()  # route scoring through the fake
    endpoint.invoke(USER)
    journal.record_resource("endpoint", "secret-check", details=endpoint.to_dict())
    out = capsys.readouterr()
    haystack = "\n".join(
        [
            caplog.text,
            repr(endpoint),
            journal.path.read_text(),
            out.out,
            out.err,
            str(vars(endpoint)),
        ]
    )
    for key in keys:
        assert key not in haystack
