"""FakeStore's API on its own: what route handlers rely on, without azure-ai-ml in between."""

from __future__ import annotations

from typing import Any

import pytest

from phi_finetune.testing._scope import FakeScope
from phi_finetune.testing._state import DeploymentScript, Fault, JobScript, JobState
from phi_finetune.testing._store import FakeStore


@pytest.fixture
def store() -> FakeStore:
    scope = FakeScope(
        subscription_id="sub-1",
        resource_group="rg-1",
        workspace_name="ws-1",
        location="westeurope",
        registry_subscription_id="sub-2",
        registry_resource_group="rg-2",
    )
    return FakeStore(scope)


def _stamped(store: FakeStore, version: str) -> dict[str, Any]:
    return {"name": version, "systemData": {"createdAt": f"2026-01-01T00:00:{store.next_id():02d}"}}


def test_scope_builds_ids_and_urls(store: FakeStore) -> None:
    scope = store.scope
    ws = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices"
    assert scope.workspace_id == f"{ws}/workspaces/ws-1"
    assert scope.arm_id("/computes/gpu") == f"{ws}/workspaces/ws-1/computes/gpu"
    assert (
        scope.tracking_uri == f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{ws}/workspaces/ws-1"
    )
    assert scope.location_id("/usages/f") == (
        "/subscriptions/sub-1/providers/Microsoft.MachineLearningServices/locations/westeurope"
        "/usages/f"
    )
    scope.location = "eastus2"
    assert scope.scoring_uri("ep") == "https://ep.eastus2.inference.ml.azure.com/score"


def test_next_id_counts_up(store: FakeStore) -> None:
    assert [store.next_id() for _ in range(3)] == [1, 2, 3]


def test_raw_headers_are_visible_only_while_serving(store: FakeStore) -> None:
    with store.serving({"Authorization": "Bearer k1"}):
        assert store.raw_header("authorization") == "Bearer k1"
        assert store.raw_header("x-missing") is None
    assert store.raw_header("Authorization") is None


def test_compute_put_reports_whether_it_existed(store: FakeStore) -> None:
    assert store.put_compute("gpu", {"v": 1}) is False
    assert store.put_compute("gpu", {"v": 2}) is True
    assert store.get_compute("gpu") == {"v": 2}
    assert store.list_computes() == [{"v": 2}]
    store.delete_compute("gpu")
    store.delete_compute("gpu")  # already gone: no error
    assert store.get_compute("gpu") is None
    assert dict(store.computes) == {}


def test_vm_sizes_are_found_ignoring_case(store: FakeStore) -> None:
    store.put_vm_size("Standard_NC6s_v3", {"family": "ncs"})
    assert store.find_vm_size("standard_nc6S_V3") == {"family": "ncs"}
    assert store.find_vm_size("Standard_X") is None
    store.put_usage("ncs", {"limit": 6})
    assert store.get_usage("ncs") == {"limit": 6}
    assert store.get_usage("other") is None


def test_registry_assets_are_kept_per_kind_and_newest_first(store: FakeStore) -> None:
    assert not store.has_registry("mine")
    store.put_registry_asset("models", "mine", "m", "1", _stamped(store, "1"))
    store.put_registry_asset("models", "mine", "m", "2", _stamped(store, "2"))
    store.put_registry_asset("components", "mine", "m", "9", _stamped(store, "9"))
    assert store.has_registry("mine")
    assert [b["name"] for b in store.registry_versions("models", "mine", "m")] == ["2", "1"]
    assert [b["name"] for b in store.registry_versions("components", "mine", "m")] == ["9"]
    assert store.get_registry_asset("models", "mine", "m", "9") is None
    assert set(store.registry_assets("models")) == {("mine", "m", "1"), ("mine", "m", "2")}


def test_workspace_assets_and_next_version(store: FakeStore) -> None:
    assert store.next_asset_version("models", "m") == "1"
    store.put_asset("models", "m", "1", _stamped(store, "1"))
    store.put_asset("models", "m", "7", _stamped(store, "7"))
    store.put_asset("models", "m", "beta", _stamped(store, "beta"))
    store.put_asset("data", "d", "3", _stamped(store, "3"))
    assert store.next_asset_version("models", "m") == "8"
    assert [b["name"] for b in store.asset_versions("models", "m")] == ["beta", "7", "1"]
    assert store.asset_names("models") == ["m"]
    assert store.asset_names("data") == ["d"]
    assert store.get_asset("data", "m", "1") is None


def test_blocks_commit_in_the_listed_order(store: FakeStore) -> None:
    store.stage_block("c/f.txt", "b2", b"world")
    store.stage_block("c/f.txt", "b1", b"hello ")
    assert store.get_blob("c/f.txt") is None
    content = store.commit_blocks("c/f.txt", ["b1", "b2"], {"k": "v"})
    assert content == b"hello world"
    assert store.blobs["c/f.txt"] == b"hello world"
    assert store.blob_metadata("c/f.txt") == {"k": "v"}
    # committed blocks are consumed
    assert store.commit_blocks("c/g.txt", ["b1"], {}) == b""


def test_blob_listing_filters_container_and_prefix(store: FakeStore) -> None:
    store.put_blob("c/a/1.txt", b"1", {})
    store.put_blob("c/b/2.txt", b"22", {})
    store.put_blob("other/a/3.txt", b"333", {})
    assert store.list_blobs("c", "a/") == [("a/1.txt", b"1")]
    assert [n for n, _ in store.list_blobs("c")] == ["a/1.txt", "b/2.txt"]
    store.set_blob_metadata("c/a/1.txt", {"m": "x"})
    metadata = store.blob_metadata("c/a/1.txt")
    metadata["m"] = "changed"  # a copy: the store keeps its own
    assert store.blob_metadata("c/a/1.txt") == {"m": "x"}


def test_job_scripts_prefer_the_named_one(store: FakeStore) -> None:
    anyone = JobScript.build("Completed")
    named = JobScript.build("Failed", name="job-b")
    store.add_job_script(anyone)
    store.add_job_script(named)
    assert store.take_job_script("job-b") is named
    assert store.take_job_script("job-a") is anyone
    assert store.take_job_script("job-c") is None


def test_a_named_job_script_waits_for_its_job(store: FakeStore) -> None:
    store.add_job_script(JobScript.build("Canceled", name="later"))
    assert store.take_job_script("now") is None
    script = store.take_job_script("later")
    assert script is not None and script.outcome == "Canceled"


def test_job_script_defaults() -> None:
    failed = JobScript.build("Failed", statuses=["Running"])
    assert failed.statuses == ["Running", "Failed"]
    assert failed.failing_step == "chat_completion_finetune"
    assert failed.logs[-1].startswith("Error: Execution failed.")
    assert JobScript.build().statuses == [
        "NotStarted",
        "Starting",
        "Preparing",
        "Queued",
        "Running",
        "Finalizing",
        "Completed",
    ]


def test_jobs_and_billable(store: FakeStore) -> None:
    running = JobState(name="j1", body={}, script=JobScript.build(statuses=["Running"]))
    done = JobState(name="j2", body={}, script=JobScript.build(statuses=["Completed"]))
    store.put_job(running)
    store.put_job(done)
    store.put_endpoint("ep", {"properties": {}})
    assert store.get_job("j1") is running
    assert store.list_jobs() == [running, done]
    assert store.billable() == ["endpoint:ep", "job:j1"]


def test_endpoint_keys_are_issued_once_and_regenerated(store: FakeStore) -> None:
    store.put_endpoint("ep", {"v": 1})
    keys = store.endpoint_keys("ep")
    assert keys is not None and keys[0] != keys[1]
    store.put_endpoint("ep", {"v": 2})
    assert store.endpoint_keys("ep") == keys
    assert store.keys_issued == list(keys)
    store.regenerate_key("ep", "secondary")
    after = store.endpoint_keys("ep")
    assert after is not None and after[0] == keys[0] and after[1] not in keys
    assert store.keys_issued[-1] == after[1]
    assert store.find_endpoint("EP") == "ep"
    assert store.find_endpoint("nope") is None


def test_deleting_an_endpoint_deletes_its_deployments(store: FakeStore) -> None:
    store.put_endpoint("ep", {})
    store.put_endpoint("other", {})
    assert store.put_deployment("ep", "blue", {"b": 1}, ["log 1"]) is False
    assert store.put_deployment("ep", "blue", {"b": 2}, ["log 2"]) is True
    store.put_deployment("other", "blue", {"b": 3}, [])
    assert store.deployment_logs("ep", "blue") == ["log 2"]
    assert store.list_deployments("ep") == [{"b": 2}]
    store.delete_endpoint("ep")
    assert store.get_endpoint("ep") is None
    assert store.endpoint_keys("ep") is None
    assert store.get_deployment("ep", "blue") is None
    assert store.deployment_logs("ep", "blue") == []
    assert set(store.deployments) == {("other", "blue")}


def test_deployment_scripts_match_endpoint_and_name(store: FakeStore) -> None:
    for_green = DeploymentScript.build("Failed", polls=0, endpoint="ep", name="green")
    for_any = DeploymentScript.build(polls=2)
    store.add_deployment_script(for_green)
    store.add_deployment_script(for_any)
    assert store.take_deployment_script("ep", "blue") is for_any
    assert store.take_deployment_script("other", "green") is None
    assert store.take_deployment_script("ep", "green") is for_green
    assert for_green.logs[-1].startswith("ERROR ResourceNotReady")


def test_operations_poll_then_finish_once(store: FakeStore) -> None:
    store.lro_polls = 1
    done: list[str] = []
    op_id, url = store.begin_operation(on_done=lambda: done.append("x"))
    assert url == (
        "https://management.azure.com/subscriptions/sub-1/providers/"
        f"Microsoft.MachineLearningServices/locations/westeurope/mfeOperationsStatus/{op_id}"
        "?api-version=2024-10-01"
    )
    operation = store.get_operation(op_id)
    assert operation is not None
    assert operation.poll()["status"] == "InProgress"
    assert operation.poll()["status"] == "Succeeded"
    assert operation.poll()["status"] == "Succeeded"
    assert done == ["x"]
    assert store.get_operation("fake-op-unknown") is None


def test_abandoned_operations_end_canceled(store: FakeStore) -> None:
    op_id, _ = store.begin_operation(polls=5)
    store.abandon_operations()
    operation = store.get_operation(op_id)
    assert operation is not None and operation.poll()["status"] == "Canceled"


def test_scoring_calls_are_recorded(store: FakeStore) -> None:
    store.record_scoring_call("ep", None, {"q": 1})
    assert store.scoring_calls == [("ep", None, {"q": 1})]
    assert store.scorer({"input_data": {"input_string": ["hi"]}}, None) == {"output": "echo: hi"}


def test_fault_build_defaults_and_fresh_answers() -> None:
    fault = Fault.build(
        "get",
        r"/computes/",
        status=None,
        times=2,
        retry_after=1.5,
        connection_reset=False,
        body=None,
        code=None,
        message=None,
        quota=True,
        subscription_id="sub-9",
    )
    assert (fault.method, fault.status) == ("GET", 400)
    answer = fault.answer()
    assert answer.json["error"]["code"] == "QuotaExceeded"
    assert "sub-9" in answer.json["error"]["message"]
    assert answer.headers["Retry-After"] == "1.5"
    answer.headers["changed"] = "yes"
    assert "changed" not in fault.answer().headers
    assert fault.matches("GET", "https://x/computes/gpu")
    assert not fault.matches("PUT", "https://x/computes/gpu")
