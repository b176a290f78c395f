"""``phi-finetune run --backend serverless``, ``plan``, ``status``, ``invoke --run``,
``endpoints list``/``delete``, ``resume`` and ``teardown --yes`` against FakeAzureML (the CLI
builds its sessions itself: ``session._make_backend`` and the commands' ``_ml_client`` are
pointed at the fake)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune import session as session_module
from phi_finetune.azure.workspace import Workspace
from phi_finetune.cli import endpoints as endpoints_cli
from phi_finetune.cli import invoke as invoke_cli
from phi_finetune.cli.main import main as cli
from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.serverless.backend import ServerlessBackend
from phi_finetune.testing import FakeAzureML

pytestmark = pytest.mark.usefixtures("restore_cli_logger_levels")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    with FakeAzureML(location="eastus2") as service:
        service.set_workspace_kind("Project")
        ws = Workspace.from_clients(service.workspace_client(), service.registry_client())

        def make_backend(config: RunConfig, *, workspace: Workspace | None = None) -> Any:
            assert config.backend == "serverless"
            return ServerlessBackend(workspace=workspace or ws, poll_interval_s=0)

        monkeypatch.setattr(session_module, "_make_backend", make_backend)
        monkeypatch.setattr(endpoints_cli, "_ml_client", lambda args: ws.ml_client)
        monkeypatch.setattr(invoke_cli, "_ml_client", lambda args: ws.ml_client)
        yield service


def _config_file(tmp_path: Path, **deploy: Any) -> str:
    config = RunConfig(
        backend="local",  # the command line's --backend serverless wins
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=100, output_dir=tmp_path / "data"),
        deploy=DeployConfig(**deploy),
    )
    path = tmp_path / "phi-finetune.toml"
    path.write_text(config.to_toml())
    return str(path)


def test_cli_run_status_invoke_endpoints_teardown(
    tmp_path: Path, fake: FakeAzureML, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, keep_endpoint=True)
    state = str(tmp_path / "state")
    assert cli(["run", "--config", config, "--backend", "serverless", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["backend"] == "serverless" and summary["reply"]
    name = summary["endpoint"]
    assert list(fake.serverless_endpoints) == [name]
    run_id = summary["run_id"]

    assert cli(["status", "--state-dir", state, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["backend"] == "serverless" and row["billable_alive"] == 1

    assert cli(["invoke", "--run", run_id, "--state-dir", state, "--message", "Hi!"]) == 0
    assert capsys.readouterr().out.strip()

    assert cli(["endpoints", "list", "--state-dir", state, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [name] and rows[0]["run_id"] == run_id

    assert cli(["teardown", run_id, "--state-dir", state, "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == [f"endpoint:{name}"]
    assert fake.billable() == [] and dict(fake.serverless_endpoints) == {}


def test_cli_run_fails_then_resume_completes(
    tmp_path: Path,
    fake: FakeAzureML,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = ServerlessBackend.register

    def broken(self: ServerlessBackend, ctx: Any) -> Any:
        from phi_finetune.errors import ServiceUnavailableError

        raise ServiceUnavailableError("lost the connection")

    monkeypatch.setattr(ServerlessBackend, "register", broken)
    config = _config_file(tmp_path)
    state = str(tmp_path / "state")
    assert cli(["run", "--config", config, "--backend", "serverless"]) != 0
    capsys.readouterr()
    (run_id,) = sorted(p.name for p in (tmp_path / "state" / "runs").iterdir())
    monkeypatch.setattr(ServerlessBackend, "register", real)
    assert cli(["resume", run_id, "--state-dir", state, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reply"]
    jobs = [
        r for r in fake.requests if r.method == "PUT" and "/jobs/" in r.path and r.status == 201
    ]
    assert len(jobs) == 1
    assert fake.billable() == []


def test_cli_endpoints_delete_a_serverless_endpoint(
    tmp_path: Path, fake: FakeAzureML, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, keep_endpoint=True)
    state = str(tmp_path / "state")
    assert cli(["run", "--config", config, "--backend", "serverless", "--json"]) == 0
    name = json.loads(capsys.readouterr().out)["endpoint"]
    assert cli(["endpoints", "delete", name, "--yes", "--state-dir", state, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deleted"] is True and len(out["runs"]) == 1
    assert dict(fake.serverless_endpoints) == {} and fake.billable() == []


def test_cli_plan_online_reads_the_model_tags_and_the_workspace(
    tmp_path: Path,
    fake: FakeAzureML,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from phi_finetune.cli import plan as plan_cli

    ws = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
    monkeypatch.setattr(plan_cli, "_make_workspace", lambda config: ws)
    path = tmp_path / "phi-finetune.toml"
    path.write_text('backend = "serverless"\n')
    assert cli(["plan", "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    details = out["details"]["serverless"]
    assert details["online"] is True and details["location"] == "eastus2"
    assert details["workspace_kind"] == "project" and "eastus2" in details["regions"]
    fake.set_workspace_kind("Default")
    assert cli(["plan", "--config", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "NotHubWorkspaceError"
