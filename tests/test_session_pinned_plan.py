"""``fine_tune`` submits exactly the journaled plan.

The plan resolves ``label="latest"`` once (model and component) and pins the versions; when the
registry's ``latest`` moves between ``plan`` and ``fine_tune`` (here: across a resume), the job
still uses the planned versions, and the pipeline is built once per submit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune.azure.backend import AzureBackend
from phi_finetune.azure.job import plan as plan_module
from phi_finetune.azure.workspace import Workspace
from phi_finetune.config import DataConfig, RunConfig
from phi_finetune.session import FineTuneSession
from phi_finetune.steps import PlanRecord
from phi_finetune.testing import FakeAzureML
from phi_finetune.testing._catalog import (
    CHAT_COMPLETION_COMPONENT,
    chat_completion_inputs,
    chat_completion_outputs,
    phi4_model_record,
)


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        yield service


def _backend(fake: FakeAzureML) -> AzureBackend:
    workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
    return AzureBackend(workspace=workspace, poll_interval_s=0)


def _submitted_node(fake: FakeAzureML) -> dict[str, Any]:
    (create,) = [r for r in fake.requests if r.route == "jobs.create" and r.status == 201]
    node: dict[str, Any] = next(iter(create.json["properties"]["jobs"].values()))
    return node


def test_resumed_fine_tune_submits_the_planned_versions_not_the_new_latest(
    tmp_path: Path, fake: FakeAzureML, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
    )
    session = FineTuneSession(config, backend=_backend(fake))
    planned = session.plan()
    assert isinstance(planned, PlanRecord)
    assert (planned.model.version, planned.component_version) == ("8", "0.0.82")
    assert str(planned) == planned.table and "Phi-4 8" in str(planned)

    # The registry moves on: a newer model and a newer component become "latest".
    phi4 = phi4_model_record()  # as the fake seeds version 8
    fake.add_model(
        phi4["name"],
        9,
        tags=dict(phi4["tags"]),
        system_metadata=dict(phi4["system_metadata"]),
    )
    fake.add_component(
        CHAT_COMPLETION_COMPONENT,
        "0.0.83",
        inputs=chat_completion_inputs(),
        outputs=chat_completion_outputs(),
    )
    fresh = FineTuneSession(
        RunConfig(
            backend="azure",
            state_dir=tmp_path / "other",
            data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data2"),
        ),
        backend=_backend(fake),
    ).plan()
    assert (fresh.model.version, fresh.component_version) == ("9", "0.0.83")  # latest moved

    builds: list[str] = []
    real_build = plan_module.build_pipeline_job

    def counting_build(*args: Any) -> Any:
        builds.append(str(args[4]))  # the display name
        return real_build(*args)

    monkeypatch.setattr(plan_module, "build_pipeline_job", counting_build)
    resumed = FineTuneSession.resume(
        session.run_id, state_dir=tmp_path / "state", backend=_backend(fake)
    )
    job = resumed.fine_tune()
    assert job.status == "Completed"
    assert builds == [planned.display_name]  # one plan, one pipeline, submitted as built

    node = _submitted_node(fake)
    assert node["componentId"].endswith(f"/components/{CHAT_COMPLETION_COMPONENT}/versions/0.0.82")
    assert node["inputs"]["mlflow_model_path"]["uri"].endswith("/models/Phi-4/versions/8")
    # The journaled plan is untouched by fine_tune.
    assert resumed.journal.record_of("plan") == planned
