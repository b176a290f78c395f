"""The serverless plan's checks, offline (config + pinned facts) and online (a stubbed
workspace and registry): each failure its own error class, naming the key and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.config import DeployConfig, FinetuneConfig, RunConfig
from phi_finetune.config.serverless import ServerlessConfig
from phi_finetune.serverless.errors import (
    NotHubWorkspaceError,
    ServerlessDataError,
    ServerlessHyperparameterError,
    ServerlessNotSupportedError,
    UnsupportedRegionError,
)
from phi_finetune.serverless.plan import (
    ModelFacts,
    WorkspaceFacts,
    parameters_for_job,
    plan_serverless,
)
from phi_finetune.steps import PreparedDataRecord

_PREPARED = PreparedDataRecord(
    out_dir="/data",
    files={"train": "/data/train.jsonl", "validation": "/data/validation.jsonl"},
    counts={"train": 90, "validation": 10},
)


def _config(finetune: dict[str, Any] | None = None, **serverless: Any) -> RunConfig:
    serverless.setdefault("region", "eastus2")
    serverless.setdefault("workspace_kind", "project")
    return RunConfig(
        backend="serverless",
        serverless=ServerlessConfig(**serverless),
        finetune=FinetuneConfig(parameters=finetune or {}),
    )


def _plan(config: RunConfig, prepared: PreparedDataRecord | None = _PREPARED, **kw: Any) -> Any:
    return plan_serverless(config, prepared, run_id="20261201T000000000Z-abcdef", **kw)


def test_offline_plan_pins_names_parameters_and_states_the_cost() -> None:
    plan = _plan(_config(hyperparameters={"learning_rate": "0.0002", "num_train_epochs": 2}))
    details = plan.details["serverless"]
    assert details["job_name"] == "phift-20261201t000000000z-abcdef"
    assert details["output_model_name"].startswith("phi-4-mini-instruct-ft-")
    assert details["marketplace_subscription"] is False
    assert plan.parameters["learning_rate"].value == 0.0002
    assert plan.parameters["num_train_epochs"].value == 2
    assert plan.parameters["max_seq_length"].source == "component default"
    assert parameters_for_job(plan.parameters) == {
        "learning_rate": "0.0002",
        "num_train_epochs": "2",
    }
    text = str(plan)
    assert "bills per hour while it exists" in text and "15 days" in text
    assert "no GPU quota needed" in text
    # Same run, same names: a resumed plan finds the same job and endpoint.
    again = _plan(_config(hyperparameters={"learning_rate": "0.0002", "num_train_epochs": 2}))
    assert again.details["serverless"] == details


def test_unsupported_region_offline() -> None:
    with pytest.raises(UnsupportedRegionError) as caught:
        _plan(_config(region="swedencentral"))
    message = str(caught.value)
    assert caught.value.key == "serverless.region"
    assert "'swedencentral'" in message and "eastus2" in message
    assert "check_region = false" in message


def test_region_check_can_be_turned_into_a_warning() -> None:
    plan = _plan(_config(region="swedencentral", check_region=False))
    assert any("swedencentral" in w for w in plan.warnings)


def test_non_hub_workspace_offline() -> None:
    with pytest.raises(NotHubWorkspaceError) as caught:
        _plan(_config(workspace_kind="default"))
    assert caught.value.key == "serverless.workspace_kind"
    assert "hub-based project" in str(caught.value)


@pytest.mark.parametrize(
    ("where", "values", "key", "fragment"),
    [
        ("serverless", {"lora_r": 8}, "serverless.hyperparameters.lora_r", "accepts only"),
        ("finetune", {"warmup_steps": 3}, "finetune.parameters.warmup_steps", "accepts only"),
        ("serverless", {"learning_rate": -1}, "serverless.hyperparameters.learning_rate", "> 0"),
        (
            "serverless",
            {"num_train_epochs": "x"},
            "serverless.hyperparameters.num_train_epochs",
            "integer",
        ),
        (
            "serverless",
            {"num_train_epochs": 0},
            "serverless.hyperparameters.num_train_epochs",
            ">= 1",
        ),
        (
            "serverless",
            {"max_seq_length": 10**7},
            "serverless.hyperparameters.max_seq_length",
            "131072",
        ),
    ],
)
def test_bad_hyperparameters_offline(
    where: str, values: dict[str, Any], key: str, fragment: str
) -> None:
    config = _config(values) if where == "finetune" else _config(hyperparameters=values)
    with pytest.raises(ServerlessHyperparameterError) as caught:
        _plan(config)
    assert caught.value.key == key
    assert key in str(caught.value) and fragment in str(caught.value)


def test_model_without_serverless_fine_tuning() -> None:
    with pytest.raises(ServerlessNotSupportedError, match=r"Phi-4'.*no serverless fine-tuning"):
        _plan(_config(model="Phi-4"))


def test_missing_or_empty_validation_data() -> None:
    no_validation = PreparedDataRecord(
        out_dir="/d", files={"train": "/d/train.jsonl"}, counts={"train": 5}
    )
    with pytest.raises(ServerlessDataError, match="validation data is missing"):
        _plan(_config(), no_validation)
    empty = PreparedDataRecord(
        out_dir="/d",
        files={"train": "/d/t.jsonl", "validation": "/d/v.jsonl"},
        counts={"train": 5, "validation": 0},
    )
    with pytest.raises(ServerlessDataError, match="empty"):
        _plan(_config(), empty)


def test_bad_output_model_prefix() -> None:
    from phi_finetune.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="output_model_prefix"):
        _plan(_config(output_model_prefix="has.dot"))


def test_online_facts_win_over_the_config() -> None:
    online = ModelFacts(
        "Phi-4-mini-instruct", "7", "azureml://x/versions/7", ("eastus",), False, "tags"
    )
    with pytest.raises(UnsupportedRegionError, match="the workspace = 'eastus2'"):
        _plan(_config(), model=online, workspace=WorkspaceFacts(location="eastus2", kind="project"))
    with pytest.raises(NotHubWorkspaceError, match="'default' workspace"):
        _plan(_config(), model=online, workspace=WorkspaceFacts(location="eastus", kind="default"))
    plan = _plan(
        _config(), model=online, workspace=WorkspaceFacts(location="eastus", kind="project")
    )
    assert plan.model.version == "7" and plan.details["serverless"]["online"] is True


def test_registry_model_without_the_regions_tag_is_not_supported() -> None:
    from types import SimpleNamespace

    entity = SimpleNamespace(name="Phi-4", version="8", id="azureml://r/Phi-4/versions/8", tags={})
    facts = ModelFacts.from_registry(entity, "azureml")
    assert facts.regions is None
    with pytest.raises(ServerlessNotSupportedError):
        _plan(_config(model="Phi-4"), model=facts, workspace=WorkspaceFacts("eastus2", "project"))


def test_workspace_facts_read_the_kind_and_hub() -> None:
    pytest.importorskip("azure.ai.ml")
    from _serverless_stub import ServerlessStub

    hub = WorkspaceFacts.read(ServerlessStub().ml_client)
    assert hub.kind == "project" and hub.location == "eastus2" and hub.workspace_id
    plain = WorkspaceFacts.read(ServerlessStub(kind="default", hub=None).ml_client)
    assert plain.kind == "default"


def test_the_sdk_needs_validation_data_and_the_job_builder_never_omits_it() -> None:
    pytest.importorskip("azure.ai.ml")
    from azure.ai.ml.finetuning import create_finetuning_job

    from phi_finetune.errors import JobError
    from phi_finetune.serverless.job import build_job

    # The SDK bug this guards against (azure-sdk-for-python#45770, still in 1.35.2).
    with pytest.raises(UnboundLocalError):
        create_finetuning_job(
            model="azureml://registries/azureml/models/Phi-4-mini-instruct/versions/1",
            task="ChatCompletion",
            training_data="azureml:ultrachat-train:1",
            output_model_name_prefix="out",
        )
    with pytest.raises(JobError, match="no validation data"):
        build_job(
            name="phift-x",
            model_id="azureml://registries/azureml/models/Phi-4-mini-instruct/versions/1",
            training_data="azureml:ultrachat-train:1",
            validation_data="",
            output_model_name="out",
            hyperparameters={},
            run_id="x",
        )
    job = build_job(
        name="phift-x",
        model_id="azureml://registries/azureml/models/Phi-4-mini-instruct/versions/1",
        training_data="azureml:ultrachat-train:1",
        validation_data="azureml:ultrachat-validation:1",
        output_model_name="out",
        hyperparameters={"learning_rate": "0.0002"},
        run_id="x",
        job_tier="standard",
    )
    assert job.validation_data.path == "azureml:ultrachat-validation:1"
    assert job.hyperparameters == {"learning_rate": "0.0002"}
    assert job.tags["phi_finetune.run_id"] == "x" and job.name == "phift-x"


# -- CLI ---------------------------------------------------------------------------------


def _toml(tmp_path: Path, serverless: str) -> str:
    path = tmp_path / "phi-finetune.toml"
    path.write_text(f'backend = "serverless"\n\n[serverless]\n{serverless}\n')
    return str(path)


def test_cli_plan_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phi_finetune.cli.main import main

    config = _toml(tmp_path, 'region = "eastus"\nworkspace_kind = "project"')
    assert main(["plan", "--config", config, "--offline", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["details"]["serverless"]["regions"]
    assert "bills per hour" in out["table"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('region = "swedencentral"', "UnsupportedRegionError"),
        ('workspace_kind = "hub"', "NotHubWorkspaceError"),
        ("hyperparameters = { lora_alpha = 16 }", "ServerlessHyperparameterError"),
    ],
)
def test_cli_plan_offline_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, error: str
) -> None:
    from phi_finetune.cli.main import main

    assert main(["plan", "--config", _toml(tmp_path, body), "--offline", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["error"] == error and len(out["problems"]) == 1
    assert "serverless." in out["problems"][0] or "workspace" in out["problems"][0]


def test_deploy_disabled_plan_says_so() -> None:
    config = RunConfig(
        backend="serverless",
        deploy=DeployConfig(enabled=False),
        serverless=ServerlessConfig(region="eastus2", workspace_kind="project"),
    )
    assert "(deploy disabled)" in str(_plan(config))


@pytest.mark.parametrize(
    "raw", ["['eastus2', 'westus3']", "eastus2, westus3", ["eastus2", "westus3"]]
)
def test_region_tag_forms(raw: Any) -> None:
    from types import SimpleNamespace

    entity = SimpleNamespace(name="Phi-4-mini-instruct", version="1", id="x", tags={})
    entity.tags = {"maas-finetuning-deploy-regions": raw}
    assert ModelFacts.from_registry(entity, "azureml").regions == ("eastus2", "westus3")
