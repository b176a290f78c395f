"""``phi-finetune run --backend azure``, ``status``, ``resume``, ``teardown --yes`` against
FakeAzureML: the CLI builds its sessions itself, so ``session._make_backend`` is pointed at the
fake's workspace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune import session as session_module
from phi_finetune.azure.backend import AzureBackend
from phi_finetune.azure.workspace import Workspace
from phi_finetune.cli.main import main as cli
from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.errors import PhiFinetuneError
from phi_finetune.journal import Journal
from phi_finetune.testing import FakeAzureML

pytestmark = pytest.mark.usefixtures("restore_cli_logger_levels")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        ws = Workspace.from_clients(service.workspace_client(), service.registry_client())

        def make_backend(config: RunConfig, *, workspace: Workspace | None = None) -> Any:
            assert config.backend == "azure"
            return AzureBackend(workspace=workspace or ws, poll_interval_s=0)

        monkeypatch.setattr(session_module, "_make_backend", make_backend)
        yield service


def _config_file(tmp_path: Path, **deploy: Any) -> Path:
    config = RunConfig(
        backend="local",  # the command line's --backend azure wins
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=100, output_dir=tmp_path / "data"),
        deploy=DeployConfig(**deploy),
    )
    path = tmp_path / "phi-finetune.toml"
    path.write_text(config.to_toml())
    return path


def _run_ids(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "state" / "runs").iterdir())


def test_run_status_teardown(
    tmp_path: Path,
    fake: FakeAzureML,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = str(_config_file(tmp_path, keep_endpoint=True))
    state = str(tmp_path / "state")
    outputs: list[str] = []

    def output() -> str:
        captured = capsys.readouterr()
        outputs.extend([captured.out, captured.err])
        return captured.out

    assert cli(["run", "--config", config, "--backend", "azure", "--json"]) == 0
    summary = json.loads(output())
    assert summary["backend"] == "azure"
    assert summary["endpoint"] in fake.endpoints
    assert summary["reply"]
    assert len(fake.jobs) == 1 and len(fake.models) == 1
    run_id = summary["run_id"]

    assert cli(["status", "--state-dir", state, "--json"]) == 0
    (row,) = json.loads(output())
    assert row["run_id"] == run_id and row["backend"] == "azure"
    assert row["billable_alive"] == 2  # the endpoint and its deployment
    assert cli(["status", "--state-dir", state]) == 0
    assert f"endpoint {summary['endpoint']}" in output()
    assert cli(["status", run_id, "--state-dir", state]) == 0
    text = output()
    assert "fine_tune" in text and summary["endpoint"] in text

    # without --yes and without a terminal nothing is deleted
    assert cli(["teardown", run_id, "--state-dir", state]) == 2
    output()
    assert summary["endpoint"] in fake.endpoints
    assert cli(["teardown", run_id, "--state-dir", state, "--yes", "--json"]) == 0
    deleted = json.loads(output())["deleted"]
    assert f"endpoint:{summary['endpoint']}" in deleted
    assert dict(fake.endpoints) == {}
    assert cli(["teardown", run_id, "--state-dir", state, "--yes"]) == 0
    assert "nothing billable" in output()
    assert cli(["status", "--state-dir", state, "--json"]) == 0
    assert json.loads(output())[0]["billable_alive"] == 0

    everything = "\n".join(
        [*outputs, caplog.text, *(p.read_text() for p in Path(state).rglob("*") if p.is_file())]
    )
    secrets = fake.secrets_issued()
    assert len(secrets) >= 3
    assert [s[:8] for s in secrets if s in everything] == []


def test_run_fails_then_resume_completes(
    tmp_path: Path,
    fake: FakeAzureML,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = str(_config_file(tmp_path))
    state = str(tmp_path / "state")
    real_register = AzureBackend.register

    def broken(self: AzureBackend, ctx: Any) -> Any:
        real_register(self, ctx)
        raise PhiFinetuneError("registry hiccup (injected)")

    monkeypatch.setattr(AzureBackend, "register", broken)
    assert cli(["run", "--config", config, "--backend", "azure"]) == 1
    assert "injected" in capsys.readouterr().err
    monkeypatch.setattr(AzureBackend, "register", real_register)
    (run_id,) = _run_ids(tmp_path)
    assert Journal.load(state, run_id).status == "failed"

    assert cli(["resume", run_id, "--state-dir", state, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == run_id and summary["reply"]
    assert len(fake.jobs) == 1
    assert len(fake.models) == 1
    assert dict(fake.endpoints) == {}
    assert Journal.load(state, run_id).status == "completed"
    assert cli(["status", "--state-dir", state, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "completed" and row["billable_alive"] == 0


def test_resume_of_unknown_run_is_a_clear_error(
    tmp_path: Path, fake: FakeAzureML, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")
    assert cli(["resume", "no-such-run", "--state-dir", state]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert cli(["teardown", "no-such-run", "--state-dir", state, "--yes"]) == 1
    assert fake.find_requests(path_contains="onlineEndpoints") == []


def test_run_with_a_bad_endpoint_name_sends_nothing(
    tmp_path: Path, fake: FakeAzureML, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "phi-finetune.toml"
    config.write_text(
        f'backend = "azure"\nstate_dir = "{tmp_path / "state"}"\n'
        '[deploy]\nendpoint_name = "Bad_Name!"\n'
    )
    fake.clear_requests()  # building the registry client looked up the registry
    assert cli(["run", "--config", str(config), "--backend", "azure"]) != 0
    err = capsys.readouterr().err
    assert "endpoint_name" in err and "Traceback" not in err
    assert fake.requests == []
