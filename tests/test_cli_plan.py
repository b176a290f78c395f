"""``phi-finetune plan`` (offline and through the fake service) and ``phi-finetune job``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.cli.main import main
from phi_finetune.testing import FakeAzureML

CONFIG = """
backend = "azure"
experiment_name = "exp-cli"
[model]
allow_retired = true
[compute]
cluster = "gpu"
vm_size = "Standard_NC24ads_A100_v4"
[finetune.parameters]
num_train_epochs = 2
"""


def _config(tmp_path: Path, extra: str = "", base: str = CONFIG) -> str:
    path = tmp_path / "phi-finetune.toml"
    path.write_text(base + extra, encoding="utf-8")
    return str(path)


def test_plan_offline_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", _config(tmp_path), "--offline"]) == 0
    out = capsys.readouterr().out
    # The default model is Phi-4: DeepSpeed stage 3 comes from its own defaults.
    assert "Phi-4-ultrachat-bs1-cosine-ds3-lora-save_limit1-seqlen-1" in out
    assert "model default" in out
    assert "num_train_epochs" in out and "user" in out
    assert "offline plan" in out


def test_plan_offline_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", _config(tmp_path), "--offline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["parameters"]["num_train_epochs"] == {
        "value": 2,
        "source": "user",
        "type": "integer",
    }
    assert data["dropped_model_defaults"] == []
    assert data["parameters"]["deepspeed_stage"]["source"] == "model default"
    assert data["model"]["context_length"] == 16384
    assert data["experiment_name"] == "exp-cli"
    assert "force_rerun: true" in data["pipeline_yaml"]


def test_plan_offline_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = 'learning_rate = 0.0\noptim = "sgd"\nauto_find_batch_size = true\n'
    assert main(["plan", "--config", _config(tmp_path, bad), "--offline", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    text = "\n".join(data["problems"])
    for name in ("learning_rate", "optim", "auto_find_batch_size"):
        assert name in text


def test_plan_offline_with_interface_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture = Path(__file__).parent / "data" / "chat_completion_pipeline_0.0.82.yaml"
    base = CONFIG.replace(
        "[finetune.parameters]", f'[finetune]\ninterface_file = "{fixture}"\n[finetune.parameters]'
    )
    assert main(["plan", "--config", _config(tmp_path, base=base), "--offline"]) == 0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    from phi_finetune.azure.workspace import Workspace

    with FakeAzureML() as service:
        service.add_compute("gpu", "Standard_NC24ads_A100_v4")

        def workspace(_config: Any) -> Workspace:
            return Workspace.from_clients(service.workspace_client(), service.registry_client())

        monkeypatch.setattr("phi_finetune.cli.plan._make_workspace", workspace)
        monkeypatch.setattr(
            "phi_finetune.cli.job._ml_client", lambda _args: service.workspace_client()
        )
        yield service


def test_plan_live_through_the_fake(
    tmp_path: Path, fake: FakeAzureML, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--config", _config(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["version"] == "8" and data["offline"] is False
    assert data["compute"]["name"] == "gpu" and data["compute"]["gpus_per_node"] == 1
    assert not [r for r in fake.requests if r.method in ("PUT", "POST")]


def test_plan_live_quota_problem_exits_1(
    tmp_path: Path, fake: FakeAzureML, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.set_usage("StandardNCADSA100v4Family", 200, 200)
    config = CONFIG.replace('cluster = "gpu"', 'cluster = "new-gpu"')
    assert main(["plan", "--config", _config(tmp_path, base=config)]) == 1
    assert "vCPUs" in capsys.readouterr().err


def test_job_status_stream_cancel(fake: FakeAzureML, capsys: pytest.CaptureFixture[str]) -> None:
    from phi_finetune.azure.compute import ComputeSelector
    from phi_finetune.azure.job import FineTuneJob

    fake.script_job("Completed", statuses=["Running"] * 5)
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
    assert main(["job", "status", name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "Running"
    assert data["trained_model"] == f"azureml://jobs/{name}/outputs/trained_model"
    assert main(["job", "cancel", name]) == 0
    out = capsys.readouterr().out  # as on the service: the cancel is first only requested
    assert f"{name}: CancelRequested" in out and "job status" in out
    assert main(["job", "status", name, "--json"]) == 0
    capsys.readouterr()
    assert main(["job", "status", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "Canceled"


def test_job_unknown_name_exits_1(fake: FakeAzureML, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "status", "nope"]) == 1
    assert "not found" in capsys.readouterr().err
