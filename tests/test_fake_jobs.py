"""FakeAzureML: data assets (with blob upload) and pipeline jobs through the real SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from azure.ai.ml import Input, MLClient
from azure.ai.ml.dsl import pipeline
from azure.ai.ml.entities import Data, PipelineJob
from azure.ai.ml.exceptions import JobException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from phi_finetune.testing import FakeAzureML

MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    return path


def _pipeline_job(fake: FakeAzureML, train: str, compute: str = "gpu") -> PipelineJob:
    component = fake.registry_client().components.get("chat_completion_pipeline", label="latest")

    @pipeline(name="phi-ft")  # type: ignore[misc]
    def build() -> dict[str, Any]:
        node = component(
            mlflow_model_path=MODEL_ID,
            compute_finetune=compute,
            train_file_path=Input(type="uri_file", path=train),
            number_of_gpu_to_use_finetuning=1,
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    job: PipelineJob = build()
    job.settings.force_rerun = True
    return job


def test_data_create_uploads_the_file_and_registers_it(
    fake_azureml: FakeAzureML, train_file: Path
) -> None:
    ml = fake_azureml.workspace_client()
    data = ml.data.create_or_update(Data(name="train", path=str(train_file), type="uri_file"))
    assert data.name == "train"
    assert data.version == "1"
    assert data.path.startswith("azureml://datastores/workspaceblobstore/paths/LocalUpload/")
    assert ("train", "1") in fake_azureml.data_assets
    (blob_key,) = [k for k in fake_azureml.blobs if k.endswith("/train.jsonl")]
    assert fake_azureml.blobs[blob_key] == train_file.read_bytes()
    (put_blob,) = fake_azureml.find_requests("PUT", "train.jsonl", host_contains="blob")[:1]
    assert put_blob.body == train_file.read_bytes()
    (put,) = fake_azureml.find_requests("PUT", "/data/train/versions/1")
    assert put.json["properties"]["dataType"] == "uri_file"
    assert fake_azureml.unrouted == []


def test_data_get_by_version_and_latest(fake_azureml: FakeAzureML, train_file: Path) -> None:
    ml = fake_azureml.workspace_client()
    ml.data.create_or_update(Data(name="train", path=str(train_file), type="uri_file"))
    ml.data.create_or_update(Data(name="train", path=str(train_file), type="uri_file", version="7"))
    assert ml.data.get("train", version="1").version == "1"
    assert ml.data.get("train", label="latest").version == "7"
    with pytest.raises(ResourceNotFoundError):
        ml.data.get("train", version="99")


def test_pipeline_job_create_get_stream_completes(
    fake_azureml: FakeAzureML, train_file: Path
) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC24ads_A100_v4")
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(
        _pipeline_job(fake_azureml, str(train_file)), experiment_name="e"
    )
    assert isinstance(job, PipelineJob)
    assert job.status == "NotStarted"
    assert job.experiment_name == "e"
    assert job.studio_url and job.name in job.studio_url
    assert job.studio_url.count("tid=") <= 1, job.studio_url
    (put,) = fake_azureml.find_requests("PUT", f"/jobs/{job.name}")
    assert put.json["properties"]["jobType"] == "Pipeline"
    assert put.json["properties"]["displayName"] == "phi-ft"
    ml.jobs.stream(job.name)
    assert ml.jobs.get(job.name).status == "Completed"
    assert fake_azureml.jobs[job.name].status == "Completed"
    assert fake_azureml.find_requests("GET", "/details", route="history.details")
    assert fake_azureml.billable() == []
    assert fake_azureml.unrouted == []


def test_scripted_status_sequence(fake_azureml: FakeAzureML) -> None:
    fake_azureml.script_job("Completed", statuses=["Queued", "Preparing", "Running"])
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml, "azureml:train:1", "serverless"))
    seen = [ml.jobs.get(job.name).status for _ in range(5)]
    assert seen == ["Queued", "Preparing", "Running", "Completed", "Completed"]


def test_failed_job_stream_raises_and_children_name_the_step(fake_azureml: FakeAzureML) -> None:
    fake_azureml.script_job(
        "Failed", failing_step="chat_completion_finetune", error_message="CUDA out of memory"
    )
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml, "azureml:train:1", "serverless"))
    # As on the service, the root only summarises; the step's own error is two levels down.
    with pytest.raises(JobException, match="Pipeline has failed child jobs"):
        ml.jobs.stream(job.name)
    assert ml.jobs.get(job.name).status == "Failed"
    (node,) = ml.jobs.list(parent_job_name=job.name)
    assert (node.display_name, node.status) == ("node", "Failed")
    children = {c.display_name: c.status for c in ml.jobs.list(parent_job_name=node.name)}
    assert children["chat_completion_finetune"] == "Failed"
    assert children["chat_completion_model_import"] == "Completed"
    log = fake_azureml.find_requests("GET", "executionlogs.txt")
    assert log, "stream downloads the execution log"


def test_job_cancel(fake_azureml: FakeAzureML) -> None:
    fake_azureml.script_job("Completed", statuses=["Running"] * 5)
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml, "azureml:train:1", "serverless"))
    ml.jobs.begin_cancel(job.name).result()
    # as on the service, a cancelled job reads CancelRequested for a while (cancel_polls)
    assert [ml.jobs.get(job.name).status for _ in range(3)] == [
        "CancelRequested",
        "CancelRequested",
        "Canceled",
    ]
    (post,) = fake_azureml.find_requests("POST", f"/jobs/{job.name}/cancel")
    assert post.method == "POST"


def test_job_get_unknown_is_not_found(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    with pytest.raises(ResourceNotFoundError):
        ml.jobs.get("no-such-job")


def test_job_on_unknown_compute_is_rejected(fake_azureml: FakeAzureML) -> None:
    ml: MLClient = fake_azureml.workspace_client()
    job = _pipeline_job(fake_azureml, "azureml:train:1")
    job.settings.default_compute = "missing-cluster"
    with pytest.raises(HttpResponseError, match="missing-cluster"):
        ml.jobs.create_or_update(job)
    assert fake_azureml.jobs == {}


def test_quota_fault_on_job_create_leaves_no_job(fake_azureml: FakeAzureML) -> None:
    fake_azureml.inject_fault("PUT", r"/jobs/", quota=True)
    ml = fake_azureml.workspace_client()
    with pytest.raises(HttpResponseError) as info:
        ml.jobs.create_or_update(_pipeline_job(fake_azureml, "azureml:train:1", "serverless"))
    assert info.value.status_code == 400
    assert info.value.error is not None and info.value.error.code == "QuotaExceeded"
    assert dict(fake_azureml.jobs) == {}
