"""FineTuneJob and JobHandle: offline plans from a local YAML, submit/watch through the fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.azure.compute import ComputeSelection, ComputeSelector
from phi_finetune.azure.foundation_model import reference_model
from phi_finetune.azure.job import FineTuneJob, JobHandle
from phi_finetune.errors import (
    JobError,
    JobFailedError,
    ParameterError,
    QuotaExceededError,
    WaitTimeoutError,
)
from phi_finetune.interface import load_pinned_interface
from phi_finetune.parameters import ParameterSource
from phi_finetune.testing import FakeAzureML

FIXTURE = Path(__file__).parent / "data" / "chat_completion_pipeline_0.0.82.yaml"
A100 = "Standard_NC24ads_A100_v4"
MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"
PHI4_ID = "azureml://registries/azureml/models/Phi-4/versions/8"  # the default model
COMPONENT_ID = "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    from azure.ai.ml.operations._run_history_constants import RunHistoryConstants

    monkeypatch.setattr(RunHistoryConstants, "_WAIT_COMPLETION_POLLING_INTERVAL_MIN", 0)
    monkeypatch.setattr(RunHistoryConstants, "_WAIT_COMPLETION_POLLING_INTERVAL_MAX", 0)
    with FakeAzureML() as service:
        service.add_compute("gpu", A100)
        yield service


def _offline_job(**kwargs: Any) -> FineTuneJob:
    options: dict[str, Any] = {
        "model": reference_model(),
        "allow_retired": True,
        "compute": ComputeSelection("gpu", A100, gpus_per_node=1),
        "component": FIXTURE,
        "train_data": "azureml:train:1",
        "test_data": "azureml:test:1",
    }
    options.update(kwargs)
    return FineTuneJob(**options)


def test_offline_plan_from_local_yaml() -> None:
    plan = _offline_job(parameters={"num_train_epochs": 2}).plan()
    assert plan.display_name == (
        "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1"
    )
    assert plan.experiment_name == "chat_completion_Phi-3-mini-4k-instruct"
    assert plan.component_id == COMPONENT_ID
    assert plan.parameters.source("num_train_epochs") is ParameterSource.USER
    assert plan.parameters.source("learning_rate") is ParameterSource.MODEL_DEFAULT
    assert any("learning_rate_min" in w for w in plan.warnings)
    assert any("archived" in w for w in plan.warnings)
    yaml_text = plan.pipeline_yaml
    assert "force_rerun: true" in yaml_text and "continue_on_step_failure: false" in yaml_text
    assert f"component: {COMPONENT_ID}" in yaml_text
    assert MODEL_ID in yaml_text and "compute_finetune: gpu" in yaml_text
    assert "learning_rate_min" not in yaml_text
    table = plan.to_table()
    assert "num_train_epochs" in table and "user" in table and "model default" in table


def test_offline_plan_from_pinned_interface() -> None:
    plan = _offline_job(component=load_pinned_interface(), offline=True).plan()
    assert plan.offline and "trained_model" in plan.pipeline_yaml


def test_plan_reports_parameter_and_compute_problems_together() -> None:
    job = _offline_job(
        compute=ComputeSelector(None, cluster="gpu", vm_size="Standard_NC4as_T4_v3"),
        parameters={"learning_rate": 0.0, "optim": "sgd"},
        offline=True,
    )
    with pytest.raises(Exception) as info:
        job.plan()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "allow list" in str(info.value)
    assert "learning_rate" in notes and "optim" in notes


def test_plan_refuses_retired_model_without_override() -> None:
    from phi_finetune.errors import ModelRetiredError

    with pytest.raises(ModelRetiredError):
        _offline_job(allow_retired=False).plan()


def test_live_plan_and_submit_records_the_job_body(fake: FakeAzureML) -> None:
    ml, registry = fake.workspace_client(), fake.registry_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=registry,
        compute=ComputeSelector(ml, cluster="gpu"),
        parameters={"num_train_epochs": 2, "apply_lora": True},
        train_data="azureml:train:1",
        validation_data="azureml:validation:1",
        test_data="azureml:test:1",
        experiment_name="exp-ft",
        tags={"team": "nlp"},
    )
    plan = job.plan()
    assert plan.interface_report is not None and plan.interface_report.identical
    handle = job.submit()
    (put,) = [r for r in fake.requests if r.method == "PUT" and "/jobs/" in r.path]
    props = put.json["properties"]
    assert props["experimentName"] == "exp-ft"
    assert props["settings"]["force_rerun"] is True
    assert props["settings"]["continue_on_step_failure"] is False
    assert props["displayName"] == plan.display_name
    assert props["tags"]["team"] == "nlp" and props["tags"]["phi_finetune.model"] == PHI4_ID
    (step,) = props["jobs"].values()
    assert step["componentId"] == COMPONENT_ID
    inputs = step["inputs"]
    assert inputs["mlflow_model_path"]["uri"] == PHI4_ID
    for name in (
        "compute_model_import",
        "compute_preprocess",
        "compute_finetune",
        "compute_model_evaluation",
    ):
        assert inputs[name]["value"] == "gpu"
    assert inputs["number_of_gpu_to_use_finetuning"]["value"] == "1"
    assert inputs["num_train_epochs"]["value"] == "2"
    assert inputs["apply_lora"]["value"] == "true"
    assert inputs["deepspeed_stage"]["value"] == "3"  # Phi-4's own default, not the reference
    assert "learning_rate_min" not in inputs
    for split in ("train", "validation", "test"):
        assert inputs[f"{split}_file_path"]["job_input_type"] == "uri_file"
    assert step["outputs"]["mlflow_model_folder"]["value"] == "${{parent.outputs.trained_model}}"
    assert handle.trained_model_path == f"azureml://jobs/{handle.name}/outputs/trained_model"
    assert handle.outputs == {"trained_model": handle.trained_model_path}
    assert handle.studio_url and handle.name in handle.studio_url
    assert handle.wait(poll_interval_s=0) == "Completed"
    assert handle.done()
    assert handle.result() == handle.trained_model_path


def test_submit_stops_on_quota_before_any_create(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    fake.set_usage("StandardNCADSA100v4Family", 190, 200)
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="new-gpu", vm_size="Standard_NC96ads_A100_v4"),
        train_data="azureml:train:1",
    )
    with pytest.raises(QuotaExceededError):
        job.submit()
    assert not [r for r in fake.requests if r.method == "PUT"]


def test_submit_rejects_bad_parameters_before_any_request_that_writes(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
        parameters={"learning_rate_min": 1e-7},
        train_data="azureml:train:1",
    )
    with pytest.raises(ParameterError, match="learning_rate_min"):
        job.submit()
    assert not [r for r in fake.requests if r.method == "PUT"]


def test_failed_job_error_names_step_message_and_studio(fake: FakeAzureML) -> None:
    fake.script_job("Failed", failing_step="chat_completion_finetune", error_message="CUDA OOM")
    ml = fake.workspace_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
    )
    handle = job.submit()
    with pytest.raises(JobFailedError) as info:
        handle.stream()
    error = info.value
    assert error.job_name == handle.name
    assert error.failing_step == "chat_completion_finetune"
    assert error.service_message is not None and "CUDA OOM" in error.service_message
    assert error.studio_url and handle.name in error.studio_url
    assert "chat_completion_finetune" in str(error)


def test_reattach_by_name_and_cancel(fake: FakeAzureML) -> None:
    fake.script_job("Completed", statuses=["Running"] * 5)
    ml = fake.workspace_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
    )
    name = job.begin_submit().name
    handle = JobHandle.from_name(fake.workspace_client(), name)
    assert handle.status() == "Running"
    assert not handle.done()
    assert handle.cancel() is None
    # as on the service, CancelRequested comes first (fake.cancel_polls), then Canceled
    seen = [handle.status() for _ in range(4)]
    assert seen[0] == "CancelRequested" and seen[-1] == "Canceled", seen
    cancels = [r for r in fake.requests if "cancel" in r.url.lower()]
    assert cancels
    assert handle.cancel() is None  # already ended: nothing sent, no error
    assert [r for r in fake.requests if "cancel" in r.url.lower()] == cancels


def test_cancel_of_a_job_that_is_gone_succeeds(fake: FakeAzureML) -> None:
    assert JobHandle(fake.workspace_client(), "no_such_job").cancel() is None


def test_from_name_of_an_unknown_job(fake: FakeAzureML) -> None:
    with pytest.raises(JobError, match="not found"):
        JobHandle.from_name(fake.workspace_client(), "no_such_job")


def test_attach_and_poll_interval_are_deprecated_aliases(fake: FakeAzureML) -> None:
    fake.script_job("Completed")
    ml = fake.workspace_client()
    name = (
        FineTuneJob(
            ml_client=ml,
            registry_client=fake.registry_client(),
            compute=ComputeSelector(ml, cluster="gpu"),
            train_data="azureml:train:1",
        )
        .submit()
        .name
    )
    with pytest.warns(DeprecationWarning, match="from_name"):
        handle = JobHandle.attach(ml, name)
    assert handle.name == name
    with pytest.warns(DeprecationWarning, match="poll_interval_s"):
        legacy = JobHandle(ml, name, poll_interval=0.5)
    assert legacy.poll_interval_s == 0.5
    with pytest.warns(DeprecationWarning, match="poll_interval_s"):
        legacy.poll_interval = 0.25
    assert legacy.poll_interval_s == 0.25
    with pytest.warns(DeprecationWarning, match="poll_interval_s"):
        assert legacy.wait(poll_interval=0) == "Completed"


def test_wait_timeout(fake: FakeAzureML) -> None:
    fake.script_job("Completed", statuses=["Running"] * 50)
    ml = fake.workspace_client()
    handle = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
    ).submit()
    with pytest.raises(WaitTimeoutError, match="keeps running"):
        handle.wait(timeout=0, poll_interval_s=0)


def test_transient_poll_errors_are_retried(fake: FakeAzureML) -> None:
    from unittest import mock

    from azure.core.exceptions import ServiceResponseError

    ml = fake.workspace_client()
    real_get = ml.jobs.get
    calls = {"n": 0}

    def flaky(name: str) -> Any:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ServiceResponseError("connection reset")
        return real_get(name)

    handle = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
    ).submit()
    handle._sleep = lambda _s: None
    with mock.patch.object(ml.jobs, "get", side_effect=flaky):
        assert handle.status() in ("NotStarted", "Running", "Completed")
    assert calls["n"] == 3


def test_stream_ctrl_c_stops_watching_without_cancel(fake: FakeAzureML) -> None:
    from unittest import mock

    fake.script_job("Completed", statuses=["Running"] * 5)
    ml = fake.workspace_client()
    handle = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
    ).submit()
    with mock.patch.object(ml.jobs, "stream", side_effect=KeyboardInterrupt):
        assert handle.stream() == "Running"
    assert not [r for r in fake.requests if "cancel" in r.path.lower()]


def test_metrics_without_tracking_uri_is_empty_with_reason(fake: FakeAzureML) -> None:
    handle = JobHandle(fake.workspace_client(), "some_job")
    metrics = handle.metrics(tracking_uri="")
    assert metrics.values == {} or metrics.reason
    assert metrics.reason


@pytest.mark.slow
def test_metrics_read_the_child_step_runs_from_mlflow(tmp_path: Path) -> None:
    # Azure ML's run id is the job name; the pipeline's steps are child runs tagged with it.
    # A local MLflow store stands in for the workspace's tracking service.
    from types import SimpleNamespace

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("chat_completion_e", artifact_location=tmp_path.as_uri())
    child = client.create_run(experiment, tags={"mlflow.parentRunId": "calm_kiwi"})
    other = client.create_run(experiment, tags={"mlflow.parentRunId": "someone_else"})
    client.log_batch(
        child.info.run_id,
        metrics=[Metric("train_loss", v, 0, step) for step, v in enumerate([2.0, 1.5, 1.2])]
        + [Metric("eval_loss", 1.4, 0, 3)],
    )
    client.log_batch(other.info.run_id, metrics=[Metric("train_loss", 9.0, 0, 0)])

    job = SimpleNamespace(experiment_name="chat_completion_e")
    metrics = JobHandle(object(), "calm_kiwi", job=job).metrics(tracking_uri=uri)
    assert metrics.reason is None
    assert metrics.values["train_loss"] == ((0, 2.0), (1, 1.5), (2, 1.2))
    assert metrics.values["eval_loss"] == ((3, 1.4),)


def test_submit_needs_training_data(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        compute=ComputeSelector(ml, cluster="gpu"),
    )
    with pytest.raises(JobError, match="training data"):
        job.submit()


# ------------------------------------------------------------- failure() walks the job tree


def _node(name: str, status: str, display: str | None = None, error: str | None = None) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        name=name,
        display_name=display or name,
        status=status,
        error=None if error is None else SimpleNamespace(message=error),
        properties={},
        studio_url=None,
        services={},
    )


def _tree_client(tree: dict[str, list[Any]], logs: dict[str, str]) -> Any:
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    ml = MagicMock()
    ml.jobs.list.side_effect = lambda parent_job_name=None, **_: iter(
        tree.get(parent_job_name or "", [])
    )
    ml.jobs.get.return_value = _node("root", "Failed")

    def details(run_id: str) -> Any:
        files = {"user_logs/std_log.txt": f"https://blob/{run_id}/std_log.txt?sig=x"}
        return SimpleNamespace(log_files=files if run_id in logs else {})

    ml.jobs._runs_operations.get_run_details.side_effect = details
    ml.jobs._runs_operations.get_run.side_effect = RuntimeError("no run history here")

    def get(url: str, **_: Any) -> Any:
        run_id = url.split("/")[3]
        return SimpleNamespace(status_code=200, text=lambda: logs[run_id])

    ml.jobs._requests_pipeline.get.side_effect = get
    return ml


def test_failure_walks_to_a_grandchild_step() -> None:
    tree = {
        "root": [
            _node("root_pipeline", "Failed", "chat_completion_pipeline", error="a step failed")
        ],
        "root_pipeline": [
            _node("s1", "Completed", "model_import"),
            _node("s3", "Canceled", "evaluation"),
            _node("s2", "Failed", "finetune", error="CUDA out of memory"),
        ],
    }
    logs = {"s2": "\n".join(f"line {i}" for i in range(30)) + "\nRuntimeError: CUDA out of memory"}
    handle = JobHandle(_tree_client(tree, logs), "root")
    assert handle.failure() == ("finetune", "CUDA out of memory")
    details = handle.failure_details(log_lines=3)
    assert details.path == ("chat_completion_pipeline", "finetune")
    assert details.log_tail == ("line 28", "line 29", "RuntimeError: CUDA out of memory")


def test_failure_walks_three_levels_and_the_error_names_the_step() -> None:
    tree = {
        "root": [_node("p1", "Failed", "chat_completion_pipeline")],
        "p1": [_node("p2", "Failed", "finetune_subgraph"), _node("ok", "Completed")],
        "p2": [_node("leaf", "Failed", "finetune", error="loss is NaN")],
    }
    ml = _tree_client(tree, {"leaf": "step started\nloss is NaN at step 10"})
    handle = JobHandle(ml, "root", poll_interval_s=0)
    with pytest.raises(JobFailedError) as info:
        handle.wait()
    err = info.value
    assert err.failing_step == "finetune" and err.service_message == "loss is NaN"
    assert "in step 'finetune'" in str(err) and "loss is NaN at step 10" in str(err)
    assert handle.failure_details().path == (
        "chat_completion_pipeline",
        "finetune_subgraph",
        "finetune",
    )
