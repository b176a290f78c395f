"""The model catalogue (pinned facts against the published specs), model sources, merge order
with a DeepSpeed-3 model, the model-aware parameter rules and ``phi-finetune models``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from phi_finetune.azure.compute import ComputeSelection
from phi_finetune.azure.foundation_model import (
    DEFAULT_MODEL_NAME,
    FoundationModel,
    catalog_model,
    check_lifecycle,
    reference_model,
)
from phi_finetune.azure.job import FineTuneJob
from phi_finetune.azure.model_catalog import load_catalog
from phi_finetune.azure.model_source import model_from_source
from phi_finetune.cli.main import main
from phi_finetune.errors import ConfigurationError, ModelRetiredError, ParameterError
from phi_finetune.parameters import ParameterSource

SPECS = Path(__file__).parent / "data" / "contract" / "azureml-assets"
A100 = "Standard_NC24ads_A100_v4"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _number(value: Any) -> Any:
    """A spec value as the catalogue holds it (YAML 1.1 leaves ``5e-6`` a string)."""
    try:
        return float(value) if isinstance(value, str) and "e-" in value else value
    except ValueError:
        return value


def _offline_job(model: FoundationModel, **kwargs: Any) -> FineTuneJob:
    options: dict[str, Any] = {
        "model": model,
        "compute": ComputeSelection("gpu", A100, gpus_per_node=1),
        "component": None,
        "offline": True,
        "train_data": "azureml:train:1",
    }
    options.update(kwargs)
    from phi_finetune.interface import load_pinned_interface

    options["component"] = load_pinned_interface()
    return FineTuneJob(**options)


@pytest.mark.parametrize(
    ("name", "spec_file"),
    [("Phi-4", "Phi-4.spec.yaml"), ("Phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct.spec.yaml")],
)
def test_pinned_facts_match_the_vendored_spec(name: str, spec_file: str) -> None:
    spec = yaml.safe_load((SPECS / spec_file).read_text("utf-8"))
    meta = spec["system_metadata"]
    entry = load_catalog().get(name)
    assert entry is not None and entry.version == str(spec["version"])
    assert entry.archived is bool(spec.get("isArchived", False))
    assert list(entry.finetune_allow_list or []) == meta["supportedComputes"]["finetuneComputes"]
    assert list(entry.inference_allow_list or []) == meta["supportedComputes"]["inferenceComputes"]
    assert entry.context_length == meta["textContextWindow"]
    assert dict(entry.deprecation) == dict(meta.get("deprecation") or {})
    defaults = {k: _number(v) for k, v in spec["tags"]["model_specific_defaults"].items()}
    assert dict(entry.model_specific_defaults) == defaults
    assert entry.source["path"].endswith("/spec.yaml")


def test_phi4_is_live_and_the_reference_retired() -> None:
    catalog = load_catalog()
    phi4, ref = catalog.get("Phi-4"), catalog.get("Phi-3-mini-4k-instruct")
    assert phi4 is not None and ref is not None
    assert phi4.lifecycle(NOW) == "live" and phi4.model_specific_defaults["deepspeed_stage"] == 3
    assert ref.lifecycle(NOW) == "retired 2025-08-30"
    model = reference_model()
    assert model.finetune_retirement_date == dt.datetime(2025, 8, 30, tzinfo=dt.UTC)


def test_phi4_mini_is_pinned_without_invented_facts() -> None:
    entry = load_catalog().get("phi-4-mini-instruct")
    assert entry is not None and entry.version is None
    assert entry.finetune_allow_list is None and entry.model_specific_defaults == {}
    assert entry.context_length == 131072
    model = catalog_model("Phi-4-mini-instruct")
    assert model is not None and model.id.endswith("/models/Phi-4-mini-instruct/labels/latest")


def test_retired_model_error_names_the_date_and_the_live_replacements() -> None:
    with pytest.raises(ModelRetiredError) as info:
        check_lifecycle(reference_model(), now=NOW)
    text = str(info.value)
    assert "2025-08-30" in text and "Phi-4, Phi-4-mini-instruct" in text
    assert "allow_retired" in text


def test_default_model_is_live_in_the_catalogue() -> None:
    model = catalog_model(DEFAULT_MODEL_NAME)
    assert model is not None and check_lifecycle(model, now=NOW) == []


def test_merge_order_deepspeed_stage_follows_the_model() -> None:
    phi4 = catalog_model("Phi-4")
    assert phi4 is not None
    plan = _offline_job(phi4).plan()
    stage = plan.parameters.values["deepspeed_stage"]
    assert (stage.value, stage.source) == ("3", ParameterSource.MODEL_DEFAULT)
    # a value only the reference sets (the model has none) stays a reference default
    epochs = plan.parameters.values["num_train_epochs"]
    assert epochs.source is ParameterSource.MODEL_DEFAULT  # Phi-4 sets num_train_epochs too
    user = _offline_job(phi4, parameters={"deepspeed_stage": "2"}).plan()
    assert user.parameters.values["deepspeed_stage"].source is ParameterSource.USER
    assert any("overrides Phi-4's own default of 3" in w for w in user.warnings)
    # the reference model keeps its own stage 2
    ref = _offline_job(reference_model(), allow_retired=True).plan()
    assert ref.parameters["deepspeed_stage"] == "2"


def test_max_seq_length_beyond_the_context_window_is_refused() -> None:
    ref = reference_model()  # 4096 tokens
    with pytest.raises(ParameterError) as info:
        _offline_job(ref, allow_retired=True, parameters={"max_seq_length": 8192}).plan()
    (problem,) = [p for p in info.value.problems if p.name == "max_seq_length"]
    assert "4096" in problem.message
    ok = _offline_job(ref, allow_retired=True, parameters={"max_seq_length": 4096}).plan()
    assert ok.parameters["max_seq_length"] == 4096


def test_deepspeed_stage3_is_refused_for_phi2() -> None:
    phi2 = FoundationModel.from_source("huggingface", "microsoft/phi-2")
    params = {"apply_deepspeed": "true", "deepspeed_stage": "3"}
    with pytest.raises(ParameterError, match="mixformer-sequential"):
        _offline_job(phi2, parameters=params).plan()


@pytest.mark.parametrize(
    ("kind", "value", "input_name", "input_type"),
    [
        ("huggingface", "microsoft/Phi-4-mini-instruct", "huggingface_id", None),
        ("pytorch", "azureml:my-pytorch-model:3", "pytorch_model_path", "custom_model"),
        ("mlflow", "azureml:my-mlflow-model:1", "mlflow_model_path", "mlflow_model"),
    ],
)
def test_each_model_source_maps_to_its_pipeline_input(
    kind: str, value: str, input_name: str, input_type: str | None
) -> None:
    model = model_from_source(kind, value)
    plan = _offline_job(model).plan()
    node = next(iter(yaml.safe_load(plan.pipeline_yaml)["jobs"].values()))
    inputs = node["inputs"]
    other = {"huggingface_id", "pytorch_model_path", "mlflow_model_path"} - {input_name}
    assert not other & set(inputs)
    if input_type is None:
        assert inputs[input_name] == value
    else:
        assert inputs[input_name] == {"type": input_type, "path": value}
    if kind == "huggingface":
        assert model.context_length == 131072  # from the catalogue entry of the same name


def test_model_source_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="pytorch_model_path"):
        model_from_source("pytorch", str(tmp_path / "missing"))
    (tmp_path / "model").mkdir()
    model = model_from_source("pytorch", str(tmp_path / "model"))
    assert model.id == str((tmp_path / "model").resolve()) and model.source == "pytorch"


def test_offline_plan_for_phi4_mini_shows_real_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "phi-finetune.toml"
    config.write_text('[model]\nname = "Phi-4-mini-instruct"\n', encoding="utf-8")
    assert main(["plan", "--config", str(config), "--offline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["version"] == "latest"  # not an invented "1"
    assert data["model"]["id"].endswith("/labels/latest")
    assert data["model"]["context_length"] == 131072


def test_models_command_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--offline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in data["models"]]
    assert "Phi-4" in names and "Phi-3-mini-4k-instruct" not in names
    phi4 = next(m for m in data["models"] if m["name"] == "Phi-4")
    assert phi4["source"] == "pinned" and phi4["pinned_from"]["repo"] == "Azure/azureml-assets"
    assert main(["models", "--offline", "--all"]) == 0
    text = capsys.readouterr().out
    assert "Phi-3-mini-4k-instruct 15  [retired 2025-08-30]" in text


def test_models_command_reads_the_live_registry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.testing import FakeAzureML

    with FakeAzureML() as fake:
        # the fake seeds Phi-4-mini-instruct 1 (serverless route); archived, `latest` finds none
        fake.add_model("Phi-4-mini-instruct", 1, archived=True)
        workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
        monkeypatch.setattr("phi_finetune.cli._common.workspace_for", lambda *_a, **_k: workspace)
        assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {m["name"]: m for m in data["models"]}
    assert rows["Phi-4"]["source"] == "live registry azureml"
    assert rows["Phi-4"]["version"] == "8"
    # no live version of Phi-4-mini-instruct: its pinned facts stay, and it says why
    assert rows["Phi-4-mini-instruct"]["source"] == "pinned"
    assert "no version with label 'latest'" in rows["Phi-4-mini-instruct"]["live_error"]
