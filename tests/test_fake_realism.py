"""FakeAzureML realism: operations that take time, 409 while in transition, the real JobStatus
set, the pipeline tree, reserved names, missing parents, paging, holds and lost replies."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from azure.ai.ml import Input
from azure.ai.ml.dsl import pipeline
from azure.ai.ml.entities import (
    Data,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    PipelineJob,
)
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseError,
)

from phi_finetune.testing import FakeAzureML

MODEL_ID = "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15"


def _pipeline_job(fake: FakeAzureML, compute: str = "serverless") -> PipelineJob:
    component = fake.registry_client().components.get("chat_completion_pipeline", label="latest")

    @pipeline(name="phi-ft")  # type: ignore[misc]
    def build() -> dict[str, Any]:
        node = component(
            mlflow_model_path=MODEL_ID,
            compute_finetune=compute,
            train_file_path=Input(type="uri_file", path="azureml:train:1"),
            number_of_gpu_to_use_finetuning=1,
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    job: PipelineJob = build()
    job.settings.force_rerun = True
    if compute != "serverless":
        job.settings.default_compute = compute
    return job


def _endpoint(name: str) -> ManagedOnlineEndpoint:
    return ManagedOnlineEndpoint(name=name, auth_mode="key")


def _deployment(endpoint: str, name: str = "demo") -> ManagedOnlineDeployment:
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model="azureml:phi-ft:1",
        instance_type="Standard_NC6s_v3",
        instance_count=1,
    )


def _status(response: Any) -> str:
    return str(json.loads(response.text())["status"])


def _error_code(exc: HttpResponseError) -> str | None:
    return exc.error.code if exc.error is not None else None


# ---------------------------------------------------------------------- long-running operations


def test_put_lro_stays_in_progress_for_the_configured_polls(fake_azureml: FakeAzureML) -> None:
    assert fake_azureml.lro_polls == 2  # the default: in progress twice, like the service
    ml = fake_azureml.workspace_client()
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-warm")).result()  # SDK imports
    fake_azureml.clear_requests()
    started = time.perf_counter()
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-lro")).result()
    assert time.perf_counter() - started < 1.0, "the pollers' waits are skipped, not slept"
    (put,) = fake_azureml.find_requests("PUT", "/onlineEndpoints/ep-lro")
    assert put.status == 201
    polls = fake_azureml.find_requests("GET", route="operation.status")
    assert len(polls) == 3  # InProgress, InProgress, Succeeded
    assert all("mfeOperationsStatus" in p.path for p in polls)
    assert fake_azureml.endpoints["ep-lro"]["properties"]["provisioningState"] == "Succeeded"


def test_lro_headers_follow_the_specification_per_verb(fake_azureml: FakeAzureML) -> None:
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    url = (
        f"https://management.azure.com{fake_azureml.workspace_id}/onlineEndpoints/ep-hdr"
        "?api-version=2023-04-01-preview"
    )
    with RequestsTransport() as transport:
        put = HttpRequest(
            "PUT", url, headers={"Content-Type": "application/json", **_auth(fake_azureml)}
        )
        put.set_json_body({"location": "eastus", "properties": {"authMode": "Key"}})
        created = transport.send(put)
        assert created.status_code == 201
        assert "Azure-AsyncOperation" in created.headers
        assert created.headers["x-ms-async-operation-timeout"].startswith("PT")
        assert "Location" not in created.headers
        async_url = created.headers["Azure-AsyncOperation"]
        for _ in range(fake_azureml.lro_polls):
            assert (
                _status(transport.send(HttpRequest("GET", async_url, headers=_auth(fake_azureml))))
                == "InProgress"
            )
        assert (
            _status(transport.send(HttpRequest("GET", async_url, headers=_auth(fake_azureml))))
            == "Succeeded"
        )

        deleted = transport.send(HttpRequest("DELETE", url, headers=_auth(fake_azureml)))
        assert deleted.status_code == 202
        assert "Azure-AsyncOperation" not in deleted.headers
        assert float(deleted.headers["Retry-After"]) > 0
        location = deleted.headers["Location"]
        assert "mfeOperationResults" in location
        # The Location URL answers by status code: 202 while running, 200 once done.
        assert [
            transport.send(HttpRequest("GET", location, headers=_auth(fake_azureml))).status_code
            for _ in range(3)
        ] == [
            202,
            202,
            200,
        ]
    assert "ep-hdr" not in fake_azureml.endpoints


def test_retry_after_is_honoured_by_the_patched_sleep(fake_azureml: FakeAzureML) -> None:
    fake_azureml.retry_after_s = 30
    ml = fake_azureml.workspace_client()
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-ra")).result()
    fake_azureml.sleeps.clear()
    started = time.perf_counter()
    ml.online_endpoints.begin_delete(name="ep-ra").result()
    assert time.perf_counter() - started < 1.0
    assert fake_azureml.sleeps.count(30.0) >= 2  # the SDK waited Retry-After between polls


def test_one_503_on_blob_upload_takes_under_a_second(
    fake_azureml: FakeAzureML, tmp_path: Path
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": []}\n', encoding="utf-8")
    fake_azureml.inject_fault("PUT", r"blob\.core\.windows\.net/.*train\.jsonl", status=503)
    ml = fake_azureml.workspace_client()
    started = time.perf_counter()
    ml.data.create_or_update(Data(name="train", path=str(path), type="uri_file"))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"storage retry back-off really slept ({elapsed:.1f}s)"
    assert any(s > 1 for s in fake_azureml.sleeps), "the back-off was asked for and skipped"
    statuses = [r.status for r in fake_azureml.find_requests("PUT", "train.jsonl")]
    assert statuses[:2] == [503, 201]


# ---------------------------------------------------------------------- 409 while in transition


def test_second_operation_on_an_endpoint_being_created_is_a_409(
    fake_azureml: FakeAzureML,
) -> None:
    ml = fake_azureml.workspace_client()
    with fake_azureml.hold("PUT", r"/onlineEndpoints/ep-busy\?") as hold:
        poller = ml.online_endpoints.begin_create_or_update(_endpoint("ep-busy"))
        assert not poller.done()
        with pytest.raises(HttpResponseError) as again:
            ml.online_endpoints.begin_create_or_update(_endpoint("ep-busy"))
        assert again.value.status_code == 409
        assert _error_code(again.value) == "Conflict"
        with pytest.raises(HttpResponseError) as delete:
            ml.online_endpoints.begin_delete(name="ep-busy")
        assert delete.value.status_code == 409
        assert fake_azureml.endpoints["ep-busy"]["properties"]["provisioningState"] == "Creating"
        assert len(hold.caught) == 1
    poller.result()
    assert fake_azureml.endpoints["ep-busy"]["properties"]["provisioningState"] == "Succeeded"
    ml.online_endpoints.begin_delete(name="ep-busy").result()
    assert "ep-busy" not in fake_azureml.endpoints


def test_deployment_and_compute_in_transition_refuse_a_second_operation(
    fake_azureml: FakeAzureML,
) -> None:
    from azure.ai.ml.entities import AmlCompute

    ml = fake_azureml.workspace_client()
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-dep")).result()
    with fake_azureml.hold("PUT", r"/deployments/demo"):
        ml.online_deployments.begin_create_or_update(_deployment("ep-dep"))
        with pytest.raises(HttpResponseError) as dep:
            ml.online_deployments.begin_delete(name="demo", endpoint_name="ep-dep")
        assert dep.value.status_code == 409
    with fake_azureml.hold("DELETE", r"/computes/gpu2"):
        fake_azureml.add_compute("gpu2", "Standard_NC6s_v3")
        ml.compute.begin_delete("gpu2")
        assert fake_azureml.computes["gpu2"]["properties"]["provisioningState"] == "Deleting"
        with pytest.raises(HttpResponseError) as comp:
            ml.compute.begin_create_or_update(AmlCompute(name="gpu2", size="Standard_NC6s_v3"))
        assert comp.value.status_code == 409
        assert "deleting" in str(comp.value).lower()


# ---------------------------------------------------------------------- jobs


def test_default_job_walks_the_real_status_set(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml))
    seen = [ml.jobs.get(job.name).status for _ in range(8)]
    assert seen == [
        "NotStarted",
        "Starting",
        "Preparing",
        "Queued",
        "Running",
        "Finalizing",
        "Completed",
        "Completed",
    ]


def test_job_stays_queued_while_quota_is_short(fake_azureml: FakeAzureML) -> None:
    fake_azureml.add_compute("gpu", "Standard_NC24ads_A100_v4")
    fake_azureml.set_usage("StandardNCADSA100v4Family", current=0, limit=0)
    fake_azureml.script_job("Completed", statuses=["NotStarted", "Running"])
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml, "gpu"))
    seen = [ml.jobs.get(job.name).status for _ in range(4)]
    assert set(seen) <= {"NotStarted", "Queued"} and seen[-2:] == ["Queued", "Queued"]
    fake_azureml.set_usage("StandardNCADSA100v4Family", current=0, limit=96)
    after = [ml.jobs.get(job.name).status for _ in range(3)]
    assert after[-2:] == ["Running", "Completed"]


def test_cancel_goes_through_cancel_requested(fake_azureml: FakeAzureML) -> None:
    fake_azureml.cancel_polls = 1
    fake_azureml.script_job("Completed", statuses=["Running"] * 5)
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml))
    ml.jobs.begin_cancel(job.name)  # not waited for
    assert ml.jobs.get(job.name).status == "CancelRequested"
    assert ml.jobs.get(job.name).status == "Canceled"
    assert fake_azureml.billable() == []


def test_script_job_takes_any_real_sequence_and_refuses_typos(fake_azureml: FakeAzureML) -> None:
    fake_azureml.script_job(
        "Completed", statuses=["Provisioning", "NotResponding", "Running", "Paused", "Unknown"]
    )
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml))
    seen = [ml.jobs.get(job.name).status for _ in range(6)]
    assert seen == ["Provisioning", "NotResponding", "Running", "Paused", "Unknown", "Completed"]
    with pytest.raises(ValueError, match="'Runing' is not an Azure ML job status"):
        fake_azureml.script_job(statuses=["Runing"])


def test_held_job_does_not_move(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    hold = fake_azureml.hold("PUT", r"/jobs/")
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml))
    assert {ml.jobs.get(job.name).status for _ in range(5)} == {"NotStarted"}
    hold.release()
    assert ml.jobs.get(job.name).status == "NotStarted"
    assert ml.jobs.get(job.name).status == "Starting"


# ---------------------------------------------------------------------- pipeline tree


def test_steps_are_grandchildren_under_one_pipeline_node(fake_azureml: FakeAzureML) -> None:
    fake_azureml.script_job(
        "Failed", failing_step="chat_completion_finetune", error_message="CUDA out of memory"
    )
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml))
    while ml.jobs.get(job.name).status != "Failed":
        pass  # bounded by the script's length
    (node,) = list(ml.jobs.list(parent_job_name=job.name))
    assert node.display_name == "node" and node.status == "Failed"
    steps = {c.display_name: c for c in ml.jobs.list(parent_job_name=node.name)}
    assert {"chat_completion_model_import", "chat_completion_finetune"} <= set(steps)
    assert steps["chat_completion_finetune"].status == "Failed"
    assert steps["chat_completion_model_import"].status == "Completed"
    assert list(ml.jobs.list(parent_job_name=steps["chat_completion_finetune"].name)) == []
    step_run = ml.jobs._runs_operations.get_run(steps["chat_completion_finetune"].name)
    assert "CUDA out of memory" in step_run.error.error.message
    root_run = ml.jobs._runs_operations.get_run(job.name)
    assert "CUDA out of memory" not in root_run.error.error.message
    assert "failed child jobs" in root_run.error.error.message
    # the ARM job list holds the submitted job only
    assert [j.name for j in ml.jobs.list()] == [job.name]


# ---------------------------------------------------------------------- names and parents


def test_deleted_endpoint_name_is_reserved_until_released(fake_azureml: FakeAzureML) -> None:
    fake_azureml.name_reservation_s = 600
    ml = fake_azureml.workspace_client()
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-again")).result()
    ml.online_endpoints.begin_delete(name="ep-again").result()
    assert fake_azureml.endpoint_name_reserved("ep-again")
    with pytest.raises(HttpResponseError) as info:
        ml.online_endpoints.begin_create_or_update(_endpoint("ep-again"))
    assert info.value.status_code == 409
    assert "reserved" in str(info.value)
    fake_azureml.release_endpoint_name("ep-again")
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-again")).result()
    assert "ep-again" in fake_azureml.endpoints


def test_reserved_name_frees_when_the_fake_clock_passes(fake_azureml: FakeAzureML) -> None:
    fake_azureml.name_reservation_s = 60
    fake_azureml.retry_after_s = 45  # the delete's polls advance the fake clock past 60 s
    ml = fake_azureml.workspace_client()
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-clock")).result()
    before = fake_azureml.clock()
    ml.online_endpoints.begin_delete(name="ep-clock").result()
    assert fake_azureml.endpoint_name_reserved("ep-clock")
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-other")).result()
    ml.online_endpoints.begin_delete(name="ep-other").result()
    assert fake_azureml.clock() - before >= 60
    assert not fake_azureml.endpoint_name_reserved("ep-clock")


def test_missing_parent_endpoint_is_a_404(fake_azureml: FakeAzureML) -> None:
    ml = fake_azureml.workspace_client()
    with pytest.raises(ResourceNotFoundError):
        list(ml.online_deployments.list(endpoint_name="no-such-endpoint"))
    with pytest.raises(ResourceNotFoundError):
        ml.online_deployments.get(name="demo", endpoint_name="no-such-endpoint")


def test_model_from_missing_or_unfinished_job_outputs_is_refused(
    fake_azureml: FakeAzureML,
) -> None:
    fake_azureml.check_job_outputs = True
    ml = fake_azureml.workspace_client()

    def register(job: str) -> Model:
        return ml.models.create_or_update(
            Model(
                name="phi-ft",
                path=f"azureml://jobs/{job}/outputs/trained_model",
                type="mlflow_model",
            )
        )

    with pytest.raises(HttpResponseError, match="'ghost' was not found"):
        register("ghost")
    fake_azureml.script_job("Completed", statuses=["Running"])
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml))
    with pytest.raises(HttpResponseError, match="is Running"):
        register(job.name)
    assert ml.jobs.get(job.name).status == "Running"
    assert ml.jobs.get(job.name).status == "Completed"
    assert register(job.name).version == "1"
    assert list(fake_azureml.models) == [("phi-ft", "1")]


# ---------------------------------------------------------------------- paging and order


def test_lists_page_with_next_link_and_jobs_come_newest_first(
    fake_azureml: FakeAzureML, tmp_path: Path
) -> None:
    fake_azureml.page_size = 2
    ml = fake_azureml.workspace_client()
    names = []
    for _ in range(5):
        names.append(ml.jobs.create_or_update(_pipeline_job(fake_azureml)).name)
    listed = [j.name for j in ml.jobs.list()]
    assert listed == names[::-1]
    pages = fake_azureml.find_requests("GET", route="jobs.list")
    assert len(pages) == 3 and "$skipToken" in pages[-1].url
    path = tmp_path / "t.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    for version in range(1, 6):
        ml.data.create_or_update(
            Data(name="t", version=str(version), path=str(path), type="uri_file")
        )
    assert sorted(int(d.version) for d in ml.data.list(name="t")) == [1, 2, 3, 4, 5]


def test_library_follows_next_link(fake_azureml: FakeAzureML) -> None:
    from phi_finetune.azure.registrar import ModelRegistrar

    fake_azureml.page_size = 1
    ml = fake_azureml.workspace_client()
    registrar = ModelRegistrar(ml, check_job_output=False)  # paging, not job outputs
    for job in ("job_a", "job_b", "job_c"):
        fake_azureml.add_completed_job(job)
    first = registrar.register("job_a", base_model="Phi-3-mini-4k-instruct")
    for job in ("job_b", "job_c"):
        registrar.register(job, base_model="Phi-3-mini-4k-instruct")
    # the version made from job_a sits on the last page; it is found, not made again
    again = registrar.register("job_a", base_model="Phi-3-mini-4k-instruct")
    assert again == first and again.created is False
    assert len(fake_azureml.models) == 3
    pages = fake_azureml.find_requests("GET", route="assets.list_versions")
    assert any("$skipToken" in r.url for r in pages), "the library followed nextLink"


# ---------------------------------------------------------------------- test-tool features


def test_hold_released_from_another_thread_lets_the_waiter_finish(
    fake_azureml: FakeAzureML,
) -> None:
    ml = fake_azureml.workspace_client()
    hold = fake_azureml.hold("PUT", r"/onlineEndpoints/ep-held")
    done = threading.Event()

    def create() -> None:
        ml.online_endpoints.begin_create_or_update(_endpoint("ep-held")).result()
        done.set()

    worker = threading.Thread(target=create)
    worker.start()
    try:
        assert not done.wait(0.3), "a held operation must not finish"
        assert fake_azureml.endpoints["ep-held"]["properties"]["provisioningState"] == "Creating"
    finally:
        hold.release()
        worker.join(10)
    assert done.is_set()
    assert fake_azureml.endpoints["ep-held"]["properties"]["provisioningState"] == "Succeeded"


def test_lost_reply_means_the_service_acted(fake_azureml: FakeAzureML) -> None:
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    # Once: azure-core retries the PUT, which finds the job the lost reply had created.
    fake_azureml.inject_lost_reply("PUT", r"/jobs/", kind="timeout")
    ml = fake_azureml.workspace_client()
    job = ml.jobs.create_or_update(_pipeline_job(fake_azureml), skip_validation=True)
    assert [r.status for r in fake_azureml.find_requests("PUT", "/jobs/")] == [201, 200]
    assert list(fake_azureml.jobs) == [job.name]
    # Always: the client gives up, although the service made the job.
    fake_azureml.inject_lost_reply("PUT", r"/jobs/", kind="timeout", times=None)
    with pytest.raises(ServiceResponseError, match="timed out"):
        ml.jobs.create_or_update(_pipeline_job(fake_azureml), skip_validation=True)
    assert len(fake_azureml.jobs) == 2, "the job was submitted although every reply was lost"
    fake_azureml.clear_faults()

    fault = fake_azureml.inject_lost_reply("POST", r"/listKeys")
    ml.online_endpoints.begin_create_or_update(_endpoint("ep-lost")).result()
    url = (
        f"https://management.azure.com{fake_azureml.workspace_id}/onlineEndpoints/ep-lost"
        "/listKeys?api-version=2023-04-01-preview"
    )
    with RequestsTransport() as transport, pytest.raises(ServiceResponseError, match="reset"):
        transport.send(HttpRequest("POST", url, headers=_auth(fake_azureml)))
    assert fault.hits == 1
    (recorded,) = fake_azureml.find_requests("POST", "/listKeys")
    assert recorded.status == 200


def _auth(fake: FakeAzureML) -> dict[str, str]:
    """The bearer header a raw request needs (the fake checks tokens)."""
    token = fake.credential().get_token("https://management.azure.com/.default").token
    return {"Authorization": f"Bearer {token}"}
