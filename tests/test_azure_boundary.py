"""The Azure boundary: every service failure becomes a library error, on every route."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

from phi_finetune.azure.boundary import (
    call,
    get_or_none,
    is_transient,
    retrying,
    translate,
)
from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.foundation_model import resolve_foundation_model
from phi_finetune.azure.job import FineTuneJob, JobHandle
from phi_finetune.azure.registrar import ModelRegistrar
from phi_finetune.azure.workspace import Workspace
from phi_finetune.config import WorkspaceConfig
from phi_finetune.endpoint import Endpoint, delete_online_endpoint
from phi_finetune.errors import (
    AuthenticationError,
    ConfigurationError,
    EndpointError,
    PhiFinetuneError,
    ServiceError,
    ServiceUnavailableError,
)
from phi_finetune.testing import FakeAzureML, autospec_ml_client

SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4eXoifQ.c2lnbmF0dXJlLXZhbHVl"


def _http(status: int, message: str = "boom") -> HttpResponseError:
    error = HttpResponseError(message=message)
    error.status_code = status
    return error


TRANSPORT: list[Callable[[], Exception]] = [
    lambda: ServiceRequestError("Failed to resolve 'management.azure.com'"),
    lambda: ServiceResponseError("Connection aborted: connection reset by peer"),
    lambda: ServiceResponseTimeoutError("Read timed out. (read timeout=300)"),
    lambda: ServiceResponseError(
        "transport failed", error=requests.exceptions.ReadTimeout("read timed out")
    ),
]
TRANSPORT_IDS = ["request-error", "response-error", "read-timeout", "wrapped-requests-timeout"]


# ------------------------------------------------------------------ translate itself
@pytest.mark.parametrize(
    ("exc", "kind", "status", "fragment"),
    [
        (
            ClientAuthenticationError(message="AADSTS70043 expired"),
            AuthenticationError,
            None,
            "az login",
        ),
        (_http(401), AuthenticationError, None, "az login"),
        (_http(403), ServiceError, 403, "AzureML Data Scientist"),
        (ResourceNotFoundError(message="gone"), ServiceError, 404, "does not exist"),
        (_http(404), ServiceError, 404, "does not exist"),
        (ResourceExistsError(message="taken"), ServiceError, 409, "conflict"),
        (_http(409), ServiceError, 409, "conflict"),
        (_http(429), ServiceUnavailableError, 429, "throttling"),
        (_http(503), ServiceUnavailableError, 503, "Retry later"),
        (_http(400, "bad sku"), ServiceError, 400, "bad sku"),
        (ServiceRequestError("dns"), ServiceUnavailableError, None, "could not reach"),
        (ServiceResponseTimeoutError("slow"), ServiceUnavailableError, None, "in time"),
        (AzureError("odd"), ServiceError, None, "odd"),
    ],
)
def test_translate_maps_each_failure(
    exc: Exception, kind: type[Exception], status: int | None, fragment: str
) -> None:
    error = translate("get compute 'gpu'", exc)
    assert type(error) is kind
    assert str(error).startswith("could not get compute 'gpu'")
    assert fragment in str(error)
    if isinstance(error, ServiceError):
        assert error.status == status


def test_translate_ml_validation_exception_is_a_configuration_error() -> None:
    from azure.ai.ml.exceptions import ValidationException

    exc = ValidationException("instance_count must be positive", "no pii")
    error = translate("create deployment 'demo'", exc)
    assert isinstance(error, ConfigurationError)
    assert "instance_count must be positive" in str(error)


def test_translate_redacts_secrets_and_keeps_library_errors() -> None:
    exc = _http(400, f"Authorization: Bearer {SECRET} refused")
    assert SECRET not in str(translate("score", exc))
    mine = EndpointError("already mine")
    assert translate("anything", mine) is mine


def test_not_found_builder_and_get_or_none() -> None:
    def missing() -> None:
        raise ResourceNotFoundError(message="no such thing")

    error = translate("get endpoint 'x'", ResourceNotFoundError("x"), not_found=EndpointError)
    assert isinstance(error, EndpointError)
    assert get_or_none("get x", missing) is None
    assert get_or_none("get x", lambda: 7) == 7
    with pytest.raises(ServiceUnavailableError) as info:
        get_or_none("get x", _raiser(_http(500)))
    assert isinstance(info.value.__cause__, HttpResponseError)


def _raiser(exc: BaseException) -> Callable[[], Any]:
    def fn() -> Any:
        raise exc

    return fn


def test_call_lets_bugs_through_unchanged() -> None:
    with pytest.raises(KeyError):
        call("do it", _raiser(KeyError("bug")))
    with pytest.raises(ServiceUnavailableError) as info:
        call("do it", _raiser(ConnectionResetError("reset")))
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_is_transient() -> None:
    assert is_transient(ServiceRequestError("x")) and is_transient(_http(502))
    assert is_transient(_http(429)) and is_transient(_http(408))
    assert not is_transient(_http(400)) and not is_transient(ResourceNotFoundError("x"))
    assert not is_transient(ValueError("x"))


def test_retry_policy_is_bounded_backs_off_and_logs_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="phi_finetune.azure.boundary")
    sleeps: list[float] = []
    attempts = {"n": 0}

    def flaky() -> str:
        attempts["n"] += 1
        raise ServiceResponseError("reset")

    with pytest.raises(ServiceResponseError):
        retrying("poll job", attempts=4, sleep=sleeps.append)(flaky)
    assert attempts["n"] == 4 and len(sleeps) == 3
    assert sleeps == sorted(sleeps) and sleeps[0] < sleeps[-1]
    retries = [r for r in caplog.records if "poll job failed" in r.getMessage()]
    assert len(retries) == 3 and all(r.levelno == logging.DEBUG for r in retries)

    attempts["n"] = 0
    with pytest.raises(ValueError):
        retrying("poll job", sleep=sleeps.append)(_raiser(ValueError("not transient")))


# ------------------------------------------------------------------ no raw exception escapes
def _check(error: BaseException, original: BaseException) -> None:
    assert isinstance(error, PhiFinetuneError), type(error)
    assert not isinstance(error, AzureError)
    assert error.__cause__ is original
    assert "could not" in str(error) or "failed" in str(error)


@pytest.fixture(params=TRANSPORT, ids=TRANSPORT_IDS)
def transport_error(request: pytest.FixtureRequest) -> Exception:
    factory: Callable[[], Exception] = request.param
    return factory()


def _no_sleep(_: float) -> None:
    return None


def test_workspace_client_creation(transport_error: Exception) -> None:
    def factory(kind: str, credential: Any, config: Any) -> Any:
        raise transport_error

    config = WorkspaceConfig("00000000-0000-0000-0000-000000000001", "rg-phi", "ws-phi")
    ws = Workspace(config, credential=object(), client_factory=factory)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailableError) as info:
        _ = ws.ml_client
    assert info.value.__cause__ is transport_error


@pytest.mark.parametrize("route", ["get", "list_sizes", "list_usage"])
def test_compute_routes(transport_error: Exception, route: str) -> None:
    ml = autospec_ml_client()
    ml.compute.get.return_value = None
    ml.compute.list_sizes.return_value = []
    getattr(ml.compute, route).side_effect = transport_error
    selector = ComputeSelector(ml, cluster="gpu", vm_size="Standard_NC24ads_A100_v4")
    with pytest.raises(ServiceUnavailableError) as info:
        if route == "list_usage":
            selector.available_vcpus("standardNCADSA100v4Family")
        else:
            selector.plan()
    assert info.value.__cause__ is transport_error


def test_foundation_model_get(transport_error: Exception) -> None:
    registry = autospec_ml_client(workspace_name=None)
    registry.models.get.side_effect = transport_error
    with pytest.raises(ServiceUnavailableError) as info:
        resolve_foundation_model(registry, "Phi-3-mini-4k-instruct", version=15)
    assert info.value.__cause__ is transport_error


@pytest.mark.parametrize("route", ["get", "list", "create_or_update"])
def test_registrar_routes(transport_error: Exception, route: str) -> None:
    ml = autospec_ml_client()
    ml.models.list.return_value = []
    ml.models.get.side_effect = ResourceNotFoundError("none yet")
    ml.jobs.get.return_value.status = "Completed"
    getattr(ml.models, route).side_effect = transport_error
    with pytest.raises(ServiceUnavailableError) as info:
        if route == "get":
            ModelRegistrar(ml).get("m", 1)
        else:
            ModelRegistrar(ml).register("job_1", base_model="Phi-3-mini-4k-instruct")
    assert info.value.__cause__ is transport_error


@pytest.mark.parametrize("route", ["get", "stream", "begin_cancel"])
def test_job_routes(transport_error: Exception, route: str) -> None:
    ml = autospec_ml_client()
    ml.jobs.get.return_value.status = "Running"
    getattr(ml.jobs, route).side_effect = transport_error
    if route == "stream":  # a broken stream is followed by a status poll
        ml.jobs.get.side_effect = transport_error
    handle = JobHandle(ml, "job_1", sleep=_no_sleep, retry_attempts=2)
    with pytest.raises(ServiceUnavailableError) as info:
        if route == "begin_cancel":
            handle.cancel()
        elif route == "stream":
            handle.stream()
        else:
            handle.status()
    assert info.value.__cause__ is transport_error


def test_job_polling_retries_then_succeeds() -> None:
    ml = autospec_ml_client()
    done = ml.jobs.get.return_value
    done.status = "Completed"
    ml.jobs.get.side_effect = [ServiceResponseError("reset"), _http(503), done]
    sleeps: list[float] = []
    assert JobHandle(ml, "job_1", sleep=sleeps.append).status() == "Completed"
    assert len(sleeps) == 2


def test_job_create_through_the_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeAzureML() as fake:
        fake.add_completed_job("job_1")  # the models below come from its output
        fake.add_compute("gpu", "Standard_NC24ads_A100_v4")
        ml = fake.workspace_client()
        job = FineTuneJob(
            ml_client=ml,
            registry_client=fake.registry_client(),
            compute=ComputeSelector(ml, cluster="gpu"),
            train_data="azureml:train:1",
        )
        fake.inject_fault("PUT", r"/jobs/", connection_reset=True, times=None)
        with pytest.raises(ServiceError) as info:
            job.submit()
        assert "submit the pipeline job" in str(info.value)
        assert isinstance(info.value.__cause__, AzureError | OSError)


@pytest.mark.parametrize(
    "route",
    [
        "online_endpoints.get",
        "online_endpoints.begin_create_or_update",
        "online_endpoints.get_keys",
        "online_endpoints.begin_delete",
        "online_deployments.get_logs",
    ],
)
def test_endpoint_routes(transport_error: Exception, route: str) -> None:
    ml = autospec_ml_client()
    remote = ml.online_endpoints.get.return_value
    remote.scoring_uri = "https://x.inference.ml.azure.com/score"
    remote.auth_mode = "key"
    remote.traffic = {"demo": 100}
    ml.online_endpoints.get_keys.return_value.primary_key = "k" * 20
    ops, method = route.split(".")
    getattr(getattr(ml, ops), method).side_effect = transport_error
    with pytest.raises(PhiFinetuneError) as info:
        if method == "begin_create_or_update":
            ml.online_endpoints.get.side_effect = ResourceNotFoundError("free")
            EndpointDeployer(ml, sleep=_no_sleep).deploy("azureml:m:1", endpoint_name="new-one")
        elif method == "begin_delete":
            delete_online_endpoint(ml, "old-one")
        elif method == "get_logs":
            Endpoint.from_name(ml, "old-one").logs(5)
        else:
            Endpoint.from_name(ml, "old-one")
    _check(info.value, transport_error)
    assert isinstance(info.value, ServiceUnavailableError)
    assert info.value.__cause__ is transport_error


def test_deployment_get_is_retried_then_translated(transport_error: Exception) -> None:
    ml = autospec_ml_client()
    ml.online_deployments.get.side_effect = transport_error
    sleeps: list[float] = []
    deployer = EndpointDeployer(ml, sleep=sleeps.append)
    with pytest.raises(ServiceUnavailableError):
        deployer._deployment_state("old-one", "demo")
    assert ml.online_deployments.get.call_count == 3 and len(sleeps) == 2


def test_deployment_create_failure_is_a_deployment_error() -> None:
    from phi_finetune.errors import DeploymentError

    with FakeAzureML() as fake:
        fake.add_completed_job("job_1")  # the models below come from its output
        ml = fake.workspace_client()
        fake.inject_fault("PUT", r"/deployments/", connection_reset=True, times=None)
        with pytest.raises(DeploymentError) as info:
            EndpointDeployer(ml, poll_interval_s=0.01, sleep=_no_sleep).deploy(
                "azureml:m:1", endpoint_name="reset-one"
            )
        assert info.value.__cause__ is not None
        assert fake.endpoints == {}  # cleaned up


# ------------------------------------------------------------------ retries inside call()
class _Headers(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:  # case-insensitive like azure-core's
        for k, v in self.items():
            if k.lower() == key.lower():
                return v
        return default


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = _Headers(headers)
        self.reason = "x"

    def text(self) -> str:
        return ""


def _http_with(status: int, message: str, **headers: str) -> HttpResponseError:
    error = _http(status, message)
    error.response = _Response(status, {k.replace("_", "-"): v for k, v in headers.items()})  # type: ignore[assignment]
    return error


def _flaky(*failures: BaseException, result: str = "done") -> tuple[Callable[[], str], list[int]]:
    calls = [0]
    pending = list(failures)

    def fn() -> str:
        calls[0] += 1
        if pending:
            raise pending.pop(0)
        return result

    return fn, calls


@pytest.mark.parametrize("make", [*TRANSPORT, lambda: _http(503), lambda: _http(502)])
def test_call_retries_a_transient_fault_then_succeeds(make: Callable[[], Exception]) -> None:
    fn, calls = _flaky(make(), make())
    sleeps: list[float] = []
    assert call("list the datastore's secrets", fn, sleep=sleeps.append) == "done"
    assert calls == [3] and sleeps == [1.0, 2.0]


def test_call_gives_up_after_its_attempts_with_the_library_error() -> None:
    fn, calls = _flaky(*[ServiceResponseError("reset")] * 10)
    sleeps: list[float] = []
    with pytest.raises(ServiceUnavailableError) as info:
        call("list the keys of endpoint 'e'", fn, sleep=sleeps.append)
    assert calls == [4] and len(sleeps) == 3
    assert "could not list the keys of endpoint 'e'" in str(info.value)
    assert isinstance(info.value.__cause__, ServiceResponseError)


def test_call_honours_retry_after_capped() -> None:
    from phi_finetune.azure.boundary import MAX_RETRY_AFTER_S

    fn, _ = _flaky(
        _http_with(429, "throttled", Retry_After="7"),
        _http_with(429, "throttled", Retry_After="100000"),
    )
    sleeps: list[float] = []
    assert call("upload", fn, sleep=sleeps.append) == "done"
    assert sleeps == [7.0, MAX_RETRY_AFTER_S]


def test_retrying_policy_honours_retry_after() -> None:
    fn, _ = _flaky(_http_with(503, "busy", Retry_After="3"))
    sleeps: list[float] = []
    assert retrying("poll job", sleep=sleeps.append)(fn) == "done"
    assert sleeps == [3.0]


def test_get_or_none_retries_too() -> None:
    fn, calls = _flaky(ServiceResponseTimeoutError("read timed out"))
    assert get_or_none("get x", fn, sleep=lambda _: None) == "done" and calls == [2]


def test_a_conflict_in_progress_is_waited_out() -> None:
    busy = "Endpoint 'e' is being deleted; another operation is in progress."
    fn, calls = _flaky(_http(409, busy), ResourceExistsError(busy), _http(409, busy))
    sleeps: list[float] = []
    assert call("create endpoint 'e'", fn, sleep=sleeps.append) == "done"
    assert calls == [4] and len(sleeps) == 3


def test_a_conflict_in_progress_gives_up_at_the_deadline() -> None:
    from phi_finetune.azure.boundary import CONFLICT_DEADLINE_S

    fn, calls = _flaky(*[_http(409, "Operation in progress on 'e'")] * 1000)
    sleeps: list[float] = []
    with pytest.raises(ServiceError) as info:
        call("delete endpoint 'e'", fn, sleep=sleeps.append)
    assert info.value.status == 409
    assert "another operation in progress" in str(info.value)
    assert "resume" in str(info.value)
    assert CONFLICT_DEADLINE_S - 30 <= sum(sleeps) <= CONFLICT_DEADLINE_S
    assert 10 < calls[0] < 100  # bounded, backed off


def test_a_conflict_that_is_not_in_progress_is_not_retried() -> None:
    fn, calls = _flaky(_http(409, "Model version m:1 already exists with other content"))
    with pytest.raises(ServiceError) as info:
        call("register model m:1", fn, sleep=lambda _: None)
    assert calls == [1] and info.value.status == 409
    assert not isinstance(info.value, ServiceUnavailableError)


def test_a_permanent_fault_is_not_retried() -> None:
    for status in (400, 401, 403, 404):
        fn, calls = _flaky(_http(status, "no"))
        with pytest.raises(PhiFinetuneError):
            call("do it", fn, sleep=lambda _: None)
        assert calls == [1], status


def test_a_401_challenge_names_the_tenant_and_how_to_sign_in() -> None:
    challenge = (
        'Bearer authorization_uri="https://login.microsoftonline.com/'
        '11111111-2222-3333-4444-555555555555", error="invalid_token", '
        'error_description="The access token expiry UTC time is earlier than current UTC time"'
    )
    error = translate("get job 'j'", _http_with(401, "expired token", WWW_Authenticate=challenge))
    assert isinstance(error, AuthenticationError)
    text = str(error)
    assert "az login --tenant 11111111-2222-3333-4444-555555555555" in text
    assert "credential in use" in text and "phi-finetune resume" in text
    assert "\n" not in text


def test_sleeping_overrides_only_the_default_sleep() -> None:
    from phi_finetune.azure.boundary import sleeping

    recorded: list[float] = []
    explicit: list[float] = []
    with sleeping(recorded.append):
        fn, _ = _flaky(_http(503, "busy"))
        call("x", fn)
        fn, _ = _flaky(_http(503, "busy"))
        call("x", fn, sleep=explicit.append)
    assert recorded == [1.0] and explicit == [1.0]
