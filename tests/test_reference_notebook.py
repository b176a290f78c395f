"""The reference notebook's own cells (tests/fixtures/reference_notebook.py) run end to end
against FakeAzureML: registry model and pipeline component, compute, fine-tune job, register,
endpoint, deployment, score, delete."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

from notebook_runner import load_cells, run_notebook

from phi_finetune.testing import FakeAzureML


def test_fixture_keeps_the_seed_cells_and_marks_every_change() -> None:
    cells = load_cells()
    assert len(cells) == 17
    source = "".join(c.source for c in cells)
    # the seed's calls are all there, unchanged
    for call in (
        'registry_ml_client.models.get(model_name, label="latest")',
        "workspace_ml_client.compute.list_sizes()",
        'name="chat_completion_pipeline", label="latest"',
        "workspace_ml_client.jobs.stream(pipeline_job.name)",
        "workspace_ml_client.models.create_or_update(",
        "workspace_ml_client.online_deployments.begin_create_or_update(demo_deployment).wait()",
        "workspace_ml_client.online_endpoints.invoke(",
        "workspace_ml_client.online_endpoints.begin_delete(name=online_endpoint_name).wait()",
    ):
        assert call in source, call
    # five changes: login, placeholders, the lost head of cell 4, the Hub download, the defaults
    assert source.count("# CHANGED:") == 5


def test_reference_notebook_runs_end_to_end_against_the_fake(tmp_path: Path) -> None:
    with FakeAzureML() as fake:
        namespace, out = run_notebook(fake, tmp_path)

        assert fake.unrouted == []
        # the compute the notebook asked for was created with its size
        assert fake.computes["gpu-cluster-big"]["properties"]["properties"]["vmSize"].lower() == (
            "standard_nc24ads_a100_v4"
        )
        # one pipeline job, built from the registry component, completed
        (job,) = fake.jobs.values()
        assert job.status == "Completed"
        jobs_body = str(job.body)
        assert "azureml://registries/azureml/components/chat_completion_pipeline" in jobs_body
        assert namespace["pipeline_job"].name in fake.jobs
        # the data went up to the workspace blob store
        assert any(path.endswith("train_sft.jsonl") for path in fake.blobs)
        # the fine-tuned model was registered from the job's output
        version = namespace["timestamp"]
        model = fake.models[("Phi-3-mini-4k-instruct-ultrachat-200k", version)]
        assert f"jobs/{job.name}/outputs/trained_model" in str(model)
        # deployed, scored with the notebook's request file, deleted
        endpoint_name = namespace["online_endpoint_name"]
        assert fake.find_requests("PUT", f"/onlineEndpoints/{endpoint_name}/deployments/demo")
        ((scored_endpoint, deployment, request),) = fake.scoring_calls
        assert (scored_endpoint, deployment) == (endpoint_name, "demo")
        assert request["input_data"]["parameters"]["max_new_tokens"] == 200
        assert "raw response:" in out and "echo:" in namespace["response"]
        assert fake.endpoints == {}
        assert fake.billable() == []


def test_a_failing_cell_is_named(tmp_path: Path) -> None:
    # without seed data the registry has no Phi-3 model: cell 2 fails, and says so
    with FakeAzureML(seed=False) as fake, pytest.raises(RuntimeError, match="cell 2"):
        run_notebook(fake, tmp_path, stop_after=2, live_reference_model=False)
