"""ModelRegistrar: default names, tags, idempotency and conflicts (autospec and the fake)."""

from __future__ import annotations

from typing import Any

import pytest

from phi_finetune.azure.registrar import ModelRegistrar, RegisteredModel, job_output_path
from phi_finetune.errors import InvalidNameError, ModelError, ServiceError
from phi_finetune.observer import NullObserver
from phi_finetune.testing import FakeAzureML, autospec_ml_client

BASE = "Phi-3-mini-4k-instruct"


def test_job_output_path() -> None:
    assert job_output_path("calm_kiwi") == "azureml://jobs/calm_kiwi/outputs/trained_model"
    path = "azureml://jobs/j/outputs/other/"
    assert job_output_path(path) == "azureml://jobs/j/outputs/other"
    with pytest.raises(InvalidNameError):
        job_output_path("bad job")


def test_model_entity_and_tags_with_autospec() -> None:
    from azure.core.exceptions import ResourceNotFoundError

    ml = autospec_ml_client()
    ml.models.list.return_value = []
    ml.models.get.side_effect = ResourceNotFoundError("nope")
    ml.models.create_or_update.side_effect = lambda model: model
    ml.jobs.get.return_value.status = "Completed"
    ml.jobs.get.return_value.outputs = {"trained_model": object()}
    events: list[tuple[str, str, str | None]] = []

    class Events(NullObserver):
        def creating(self, kind: str, name: str, version: str | None = None, **_: Any) -> None:
            events.append(("creating", name, version))

        def created(self, kind: str, name: str, version: str | None = None, **_: Any) -> None:
            events.append(("created", name, version))

    registrar = ModelRegistrar(ml, observer=Events())
    result = registrar.register(
        "calm_kiwi",
        base_model=f"azureml://registries/azureml/models/{BASE}/versions/15",
        data_hashes={"train": "sha-1", "test": "sha-2"},
        parameters={"learning_rate": 5e-6, "apply_lora": "true"},
        tags={"team": "ml"},
        run_id="run-1",
    )
    model = ml.models.create_or_update.call_args.args[0]
    assert model.path == "azureml://jobs/calm_kiwi/outputs/trained_model"
    assert model.type == "mlflow_model"
    assert model.name == f"{BASE}-ultrachat-200k"
    assert model.version.isdigit()
    assert model.tags["phi_finetune.job_name"] == "calm_kiwi"
    assert model.tags["phi_finetune.data.train"] == "sha-1"
    assert model.tags["phi_finetune.param.learning_rate"] == "5e-06"
    assert model.tags["phi_finetune.run_id"] == "run-1"
    assert model.tags["team"] == "ml"
    assert result.created and result.asset_id == f"azureml:{model.name}:{model.version}"
    assert events == [
        ("creating", model.name, model.version),
        ("created", model.name, model.version),
    ]


def test_bad_names_are_refused_before_any_call() -> None:
    ml = autospec_ml_client()
    registrar = ModelRegistrar(ml)
    with pytest.raises(InvalidNameError):
        registrar.register("job", base_model=BASE, name="bad/name")
    with pytest.raises(InvalidNameError):
        registrar.register("job", base_model=BASE, version="a b")
    with pytest.raises(InvalidNameError):
        registrar.register("job with space", base_model=BASE)
    assert ml.models.method_calls == []


def test_service_errors_are_wrapped() -> None:
    from azure.core.exceptions import HttpResponseError

    ml = autospec_ml_client()
    ml.models.list.side_effect = HttpResponseError("forbidden")
    with pytest.raises(ServiceError, match="list versions"):
        ModelRegistrar(ml).register("job", base_model=BASE)


@pytest.fixture
def fake() -> Any:
    with FakeAzureML() as service:
        service.add_completed_job("job_1")  # the models below come from their outputs
        for job in ("job_2", "job", "calm_kiwi"):
            service.add_completed_job(job)
        yield service


def test_register_through_the_real_sdk(fake: Any) -> None:
    ml = fake.workspace_client()
    model = ModelRegistrar(ml, check_job_output=False).register(
        "job_1", base_model=BASE, version=3, description="d"
    )
    assert (f"{BASE}-ultrachat-200k", "3") in fake.models
    assert (
        model.version == "3" and model.source_path == "azureml://jobs/job_1/outputs/trained_model"
    )
    assert "name=" in repr(model) and "tags" not in repr(model)


def test_same_job_output_twice_returns_the_existing_version(fake: Any) -> None:
    ml = fake.workspace_client()
    registrar = ModelRegistrar(ml, check_job_output=False)
    first = registrar.register("job_1", base_model=BASE)
    again = registrar.register("job_1", base_model=BASE)
    assert again == first and again.created is False
    assert len(fake.models) == 1
    explicit = registrar.register("job_1", base_model=BASE, version=first.version)
    assert explicit == first
    other = registrar.register("job_2", base_model=BASE)
    assert other.version != first.version and len(fake.models) == 2


def test_version_holding_another_output_is_a_clear_error(fake: Any) -> None:
    ml = fake.workspace_client()
    registrar = ModelRegistrar(ml, check_job_output=False)
    registrar.register("job_1", base_model=BASE, version=7)
    with pytest.raises(ModelError, match=r"already exists.*job_1.*pick another version"):
        registrar.register("job_2", base_model=BASE, version=7)
    assert len(fake.models) == 1


def test_get_and_missing(fake: Any) -> None:
    ml = fake.workspace_client()
    registrar = ModelRegistrar(ml, check_job_output=False)
    made = registrar.register("job_1", base_model=BASE, version=1)
    assert registrar.get(made.name, 1) == made
    with pytest.raises(ModelError, match="not registered"):
        registrar.get(made.name, 2)
    assert registrar.find("no-such-model", source_path="azureml://jobs/x/outputs/y") is None


def test_bad_names_send_no_request(fake: Any) -> None:
    ml = fake.workspace_client()
    fake.clear_requests()
    with pytest.raises(InvalidNameError):
        ModelRegistrar(ml).register("job_1", base_model=BASE, name="-bad")
    assert fake.requests == []


def test_registered_model_to_dict() -> None:
    model = RegisteredModel(name="m", version="1", tags={"a": "b"})
    assert model.to_dict()["asset_id"] == "azureml:m:1"


# -------------------------------------------------- registering from a missing/unfinished job


def test_missing_job_fails_before_any_put(fake: Any) -> None:
    ml = fake.workspace_client()
    with pytest.raises(ModelError, match=r"job 'never_ran' does not exist") as info:
        ModelRegistrar(ml).register("never_ran", base_model=BASE, version=1)
    assert "phi-finetune status" in str(info.value)
    assert not [r for r in fake.requests if r.method == "PUT"]
    assert fake.models == {}


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        ("Running", "wait until it completes"),
        ("Queued", "wait until it completes"),
        ("Failed", "submit a new job"),
        ("Canceled", "submit a new job"),
    ],
)
def test_unfinished_job_fails_before_any_put(status: str, advice: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    ml = autospec_ml_client()
    ml.models.list.return_value = []
    ml.models.get.side_effect = ResourceNotFoundError("nope")
    ml.jobs.get.return_value.status = status
    with pytest.raises(ModelError, match=rf"job 'calm_kiwi' is {status}, not Completed") as info:
        ModelRegistrar(ml).register("calm_kiwi", base_model=BASE)
    assert advice in str(info.value)
    ml.models.create_or_update.assert_not_called()


def test_job_without_that_output_fails_before_any_put() -> None:
    from azure.core.exceptions import ResourceNotFoundError

    ml = autospec_ml_client()
    ml.models.list.return_value = []
    ml.models.get.side_effect = ResourceNotFoundError("nope")
    ml.jobs.get.return_value.status = "Completed"
    ml.jobs.get.return_value.outputs = {"other": object()}
    with pytest.raises(ModelError, match=r"has no output 'trained_model' \(its outputs: other\)"):
        ModelRegistrar(ml).register("calm_kiwi", base_model=BASE)
    ml.models.create_or_update.assert_not_called()
