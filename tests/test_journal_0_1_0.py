"""Journals written by phi_finetune 0.1.0 (format 1, checked in under tests/data/journals_0_1_0/):
they are listed, shown, resumed and torn down by this release (format 2).

``azure/``: a run against the fake with ``deploy.keep_endpoint = true`` (finished, endpoint
alive). ``local/``: a local run stopped after ``register``. ``demo/``: a finished
``phi-finetune demo`` run (last step ``teardown``, never marked finished by 0.1.0).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi_finetune.cli.main import main as cli
from phi_finetune.journal import FORMAT_VERSION, Journal, list_runs
from phi_finetune.session import FineTuneSession
from phi_finetune.steps import (
    STEPS,
    DeploymentRecord,
    JobRecord,
    ModelRef,
    PlanRecord,
    PreparedDataRecord,
)

DATA = Path(__file__).parent / "data" / "journals_0_1_0"
AZURE_RUN = "20261201T095609635Z-c2ab31"
LOCAL_RUN = "20261201T095613723Z-d415e0"
DEMO_RUN = "20261201T095818293Z-eafb7c"


def _state(tmp_path: Path, which: str) -> Path:
    """A copy of one checked-in state folder (loading and saving rewrites the journal)."""
    target = tmp_path / which
    shutil.copytree(DATA / which, target)
    return target


def test_the_checked_in_journals_are_format_1() -> None:
    for which, run_id in (("azure", AZURE_RUN), ("local", LOCAL_RUN), ("demo", DEMO_RUN)):
        raw = json.loads((DATA / which / "runs" / run_id / "journal.json").read_text())
        assert raw["format"] == 1 and raw["run_id"] == run_id
    assert FORMAT_VERSION == 2


def test_listed_with_status_and_what_they_hold(tmp_path: Path) -> None:
    (azure,) = list_runs(_state(tmp_path, "azure"))
    assert azure.status == "completed" and azure.error is None
    assert {(r.kind, r.name) for r in azure.billable_alive} == {
        ("endpoint", "ultrachat-completion-tpd29mcin8"),
        ("deployment", "demo"),
    }
    (local,) = list_runs(_state(tmp_path, "local"))
    assert (local.status, local.last_completed_step) == ("incomplete", "register")
    assert local.billable_alive == ()
    (demo,) = list_runs(_state(tmp_path, "demo"))
    assert (demo.status, demo.last_completed_step) == ("completed", "teardown")


def test_every_step_reads_as_its_typed_record(tmp_path: Path) -> None:
    journal = Journal.load(_state(tmp_path, "azure"), AZURE_RUN)
    assert list(journal.steps) == [s for s in STEPS if s != "teardown"]
    prepared = journal.record_of("prepare_data")
    assert isinstance(prepared, PreparedDataRecord)
    assert prepared.assets["train_file_path"].startswith("azureml:ultrachat-train:")
    plan = journal.record_of("plan")
    assert isinstance(plan, PlanRecord)
    assert (plan.model.name, plan.model.version) == ("Phi-3-mini-4k-instruct", "15")
    assert plan.component_version == "0.0.82" and plan.compute is not None
    assert plan.compute.name == "gpu-cluster"
    assert str(plan).startswith("model") and plan.parameters["learning_rate"].value == 5e-6
    job = journal.record_of("fine_tune")
    assert isinstance(job, JobRecord) and job.status == "Completed"
    assert job.trained_model == f"azureml://jobs/{job.name}/outputs/trained_model"
    model = journal.record_of("register")
    assert isinstance(model, ModelRef)
    assert model.uri == f"azureml:{model.name}:{model.version}" and model.id
    deployed = journal.record_of("deploy")
    assert isinstance(deployed, DeploymentRecord)
    assert deployed.endpoint_name == "ultrachat-completion-tpd29mcin8"

    local = Journal.load(_state(tmp_path, "local"), LOCAL_RUN)
    job = local.record_of("fine_tune")
    assert job.name == f"local-{LOCAL_RUN}" and job.training is not None
    assert job.training.merged_dir.endswith("/training/merged") and job.training.history
    model = local.record_of("register")
    assert model.uri == f"models:/{model.name}/1" and model.tracking_uri.startswith("sqlite:")
    plan = local.record_of("plan")
    assert plan.model.test_model and "learning_rate" in plan.table  # drawn by the migration


def test_saving_a_migrated_journal_writes_format_2(tmp_path: Path) -> None:
    state = _state(tmp_path, "local")
    journal = Journal.load(state, LOCAL_RUN)
    journal.record_resource("local_model", "extra", billable=False)
    raw = json.loads(journal.path.read_text())
    assert raw["format"] == 2 and raw["migrated_from"] == 1
    assert raw["steps"]["fine_tune"]["outputs"]["name"] == f"local-{LOCAL_RUN}"
    assert raw["steps"]["fine_tune"]["outputs"]["seconds"] > 0  # kept through the migration
    again = Journal.load(state, LOCAL_RUN)
    assert again.record_of("register") == journal.record_of("register")


def test_local_run_resumes_without_redoing_steps_and_tears_down(tmp_path: Path) -> None:
    state = _state(tmp_path, "local")
    session = FineTuneSession.resume(LOCAL_RUN, state_dir=state)
    before = session.journal.get_step("register")
    model = session.register()  # completed in 0.1.0: read back, not run again
    assert isinstance(model, ModelRef) and str(model) == "phi3-tiny-test-model-ultrachat-200k:1"
    assert session.journal.get_step("register") == before
    result = session.result()
    assert result.model == model and result.job_name == f"local-{LOCAL_RUN}"
    assert result.endpoint is None and result.reply is None
    assert FineTuneSession.teardown_run(LOCAL_RUN, state_dir=state) == []
    assert Journal.load(state, LOCAL_RUN).status == "completed"


def test_status_shows_the_demo_run_finished_in_workflow_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path, "demo")
    assert cli(["status", "--state-dir", str(state)]) == 0
    listing = capsys.readouterr().out
    assert DEMO_RUN in listing and "completed" in listing and "incomplete" not in listing
    assert cli(["status", DEMO_RUN, "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line.split()[0] for line in lines[1:] if line.split()[0] in STEPS]
    assert shown == list(STEPS)


# ------------------------------------------------------------------------------- azure


@pytest.fixture
def fake() -> Iterator[object]:
    pytest.importorskip("azure.ai.ml")
    from phi_finetune.testing import FakeAzureML

    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        yield service


def test_azure_run_resumes_and_tears_down_its_live_endpoint(tmp_path: Path, fake: object) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    from phi_finetune.azure.backend import AzureBackend
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.testing import FakeAzureML

    assert isinstance(fake, FakeAzureML)
    workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
    endpoint = "ultrachat-completion-tpd29mcin8"  # what the 0.1.0 run left alive
    workspace.ml_client.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=endpoint, auth_mode="key")
    ).result()
    assert endpoint in fake.endpoints

    state = _state(tmp_path, "azure")
    backend = AzureBackend(workspace=workspace, poll_interval_s=0)
    result = FineTuneSession.resume(AZURE_RUN, state_dir=state, backend=backend).run()
    # Every step completed in 0.1.0: nothing is submitted, registered or deployed again.
    assert not [r for r in fake.requests if r.method == "PUT" and r.route != "endpoints.create"]
    assert result.endpoint_name == endpoint and isinstance(result.reply, str)
    assert result.model is not None and result.model.uri.startswith("azureml:")

    deleted = FineTuneSession.teardown_run(
        AZURE_RUN, state_dir=state, backend=AzureBackend(workspace=workspace, poll_interval_s=0)
    )
    assert f"endpoint:{endpoint}" in deleted
    assert endpoint not in fake.endpoints
    journal = Journal.load(state, AZURE_RUN)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert journal.to_dict()["format"] == 2
