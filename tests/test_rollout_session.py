"""Rollouts through ``FineTuneSession.rollout`` and ``phi-finetune rollout`` on a whole run
against FakeAzureML; the probe and request settings through the real SDK to the fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune.azure.backend import AzureBackend
from phi_finetune.azure.workspace import Workspace
from phi_finetune.config import DataConfig, DeployConfig, RunConfig, ScoreConfig
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession
from phi_finetune.testing import FakeAzureML


class Killed(BaseException):
    """A simulated process kill."""


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        yield service


@pytest.fixture
def workspace(fake: FakeAzureML) -> Workspace:
    return Workspace.from_clients(fake.workspace_client(), fake.registry_client())


def _deployed(tmp_path: Path, workspace: Workspace, **deploy: Any) -> FineTuneSession:
    config = RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
        deploy=DeployConfig(keep_endpoint=True, **deploy),
        score=ScoreConfig(enabled=False),
    )
    session = FineTuneSession(config, backend=AzureBackend(workspace=workspace, poll_interval_s=0))
    session.run()
    return session


def _second_version(fake: FakeAzureML, session: FineTuneSession) -> str:
    """Model version 2, from the run's job (as a second fine-tune would register it)."""
    from azure.ai.ml.entities import Model

    model = session.journal.record_of("register")
    job = session.journal.record_of("fine_tune").name
    fake.workspace_client().models.create_or_update(
        Model(
            name=model.name,
            version="2",
            path=f"azureml://jobs/{job}/outputs/trained_model",
            type="mlflow_model",
        )
    )
    return f"azureml:{model.name}:2"


def _traffic(fake: FakeAzureML, endpoint: str) -> dict[str, int]:
    return {k: v for k, v in fake.endpoints[endpoint]["properties"]["traffic"].items() if v}


def test_session_rollout_killed_in_the_middle_then_resumed(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import OnlineEndpointOperations

    session = _deployed(tmp_path, workspace)
    endpoint = session.deploy().name
    assert _traffic(fake, endpoint) == {"demo": 100}
    v2 = _second_version(fake, session)

    rollout = session.rollout(v2, steps=(10, 100))
    assert rollout.status().new_deployment == "deploy-v2"
    rollout.start()
    rollout.step()
    assert _traffic(fake, endpoint) == {"demo": 90, "deploy-v2": 10}
    real = OnlineEndpointOperations.begin_create_or_update

    def killed(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(OnlineEndpointOperations, "begin_create_or_update", killed)
    with pytest.raises(Killed):
        rollout.finish()
    monkeypatch.undo()

    again = FineTuneSession.resume(
        session.run_id,
        state_dir=session.state_dir,
        backend=AzureBackend(workspace=workspace, poll_interval_s=0),
    )
    # The same call as before (a re-run script) continues the journaled rollout.
    status = again.rollout(v2, steps=(10, 100)).finish()
    assert status.phase == "done"
    assert _traffic(fake, endpoint) == {"deploy-v2": 100}
    assert sorted(dep for _, dep in fake.deployments) == ["deploy-v2"]
    creates = fake.find_requests("PUT", f"/onlineEndpoints/{endpoint}/deployments/deploy-v2")
    assert len(creates) == 1
    # The run's endpoint now scores on the new deployment; teardown deletes everything.
    assert again.deploy().deployment_name == "deploy-v2"
    assert again.deploy().invoke([{"role": "user", "content": "hello"}])
    assert fake.scoring_calls[-1][1] == "deploy-v2"
    again.teardown()
    assert fake.billable() == [] and dict(fake.endpoints) == {}
    journal = Journal.load(session.state_dir, session.run_id)
    assert journal.resources(billable_only=True, alive_only=True) == []


def test_cli_rollout_start_step_status_rollback(
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from phi_finetune.cli.main import main

    session = _deployed(tmp_path, workspace)
    endpoint = session.deploy().name
    v2 = _second_version(fake, session)
    # The CLI builds its own backend: point its workspace at the fake.
    monkeypatch.setattr(AzureBackend, "workspace", lambda self, ctx: workspace)
    monkeypatch.setattr(AzureBackend, "poll_interval_s", 0, raising=False)
    state = ["--state-dir", str(session.state_dir)]
    run = session.run_id

    assert main(["rollout", "start", run, "--model", v2, "--deployment", "green", "--mirror",
                 "10", *state]) == 0  # fmt: skip
    assert fake.endpoints[endpoint]["properties"]["mirrorTraffic"] == {"green": 10}
    assert main(["rollout", "step", run, *state]) == 0
    assert _traffic(fake, endpoint) == {"demo": 90, "green": 10}
    capsys.readouterr()
    assert main(["--json", "rollout", "status", run, *state]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["phase"] == "rolling_out" and shown["traffic"] == {"demo": 90, "green": 10}
    assert shown["next_stage"] == "live traffic demo 50% / green 50%"
    assert main(["rollout", "rollback", run, *state]) == 0
    assert _traffic(fake, endpoint) == {"demo": 100}
    assert sorted(dep for _, dep in fake.deployments) == ["demo"]
    assert main(["rollout", "status", run, *state]) == 0
    assert "(rolled_back)" in capsys.readouterr().out
    # A bad plan is one clear line and exit code 1, nothing created.
    assert main(["rollout", "start", run, "--model", v2, "--steps", "10,50", *state]) == 1
    assert "must end at 100" in capsys.readouterr().err
