"""The TOML run configuration: good files, every kind of bad file, Python-built objects."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from phi_finetune.config import (
    ComputeConfig,
    CostConfig,
    DataConfig,
    DeployConfig,
    FinetuneConfig,
    LocalConfig,
    ModelConfig,
    RunConfig,
    ScoreConfig,
    WorkspaceConfig,
    load_run_config,
)
from phi_finetune.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
SUB = "11111111-2222-3333-4444-555555555555"


def write(tmp_path: Path, text: str, name: str = "phi-finetune.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigurationError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_run_config(path)
    message = str(info.value)
    assert str(path) in message, message
    assert info.value.source == str(path)
    return info.value


# -- good files --------------------------------------------------------------------------------


def test_defaults_are_the_reference_workflow_on_a_live_model() -> None:
    config = RunConfig()
    assert config.backend == "local"
    assert config.state_dir == Path(".phi_finetune")
    assert config.workspace is None
    # Phi-3-mini-4k-instruct retired on 2025-08-30: the default is the live Phi-4.
    assert config.model == ModelConfig(name="Phi-4", label="latest")
    assert config.model.selector == {"label": "latest"}
    assert config.model.source == ("registry", "Phi-4")
    assert config.effective_experiment_name == "chat_completion_Phi-4"
    assert config.compute.cluster == "gpu-cluster"
    assert config.compute.vm_size == "Standard_NC24ads_A100_v4"
    assert config.data.source == "HuggingFaceH4/ultrachat_200k"
    assert config.data.split_pc == 5.0
    assert config.data.output_dir == Path("ultrachat_200k_dataset")
    assert config.finetune.component == "chat_completion_pipeline"
    assert config.finetune.parameters == {}
    assert config.deploy.instance_type is None  # chosen from the model's inference allow list
    assert config.deploy.deployment_name == "demo"
    assert config.deploy.liveness_initial_delay == 600
    assert config.deploy.request_timeout_ms == 90000
    assert config.score.parameters() == {
        "temperature": 0.6,
        "top_p": 0.9,
        "do_sample": True,
        "max_new_tokens": 200,
    }
    assert config.local.host == "127.0.0.1"
    assert config.local.registered_model_alias == "champion"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, ""))
    # default paths, like paths written in the file, are relative to the file's folder
    assert config.state_dir == tmp_path / ".phi_finetune"
    assert config.data.output_dir == tmp_path / "ultrachat_200k_dataset"
    assert config == attrs.evolve(
        RunConfig(),
        state_dir=tmp_path / ".phi_finetune",
        data=DataConfig(output_dir=tmp_path / "ultrachat_200k_dataset"),
    )


FULL = f"""
backend = "azure"
state_dir = "state"
experiment_name = "my-experiment"

[workspace]
subscription_id = "{SUB}"
resource_group = "rg-ml"
workspace_name = "ws-ml"
registry_name = "azureml"

[model]
name = "Phi-3.5-mini-instruct"
version = 4
registry = "azureml"
allow_retired = true

[compute]
cluster = "a100-cluster"
vm_size = "Standard_NC48ads_A100_v4"
min_instances = 0
max_instances = 2
idle_time_before_scale_down = 300
tier = "low_priority"
create_if_missing = false
nodes = 2
check_quota = false

[data]
source = "data/chat.jsonl"
split_pc = 1
sample = "random"
seed = 7
rows = 100
validation_pc = 10.5
on_invalid = "report"
output_dir = "out/data"
max_tokens = 2048

[finetune]
component = "chat_completion_pipeline"
component_version = "0.0.82"
interface_file = "components/spec.yaml"

[finetune.parameters]
num_train_epochs = 3
learning_rate = 5e-6
lr_scheduler_type = "cosine"
apply_lora = "true"
apply_deepspeed = true

[deploy]
enabled = true
instance_type = "Standard_NC24ads_A100_v4"
instance_count = 2
endpoint_name = "ultrachat-completion-1"
deployment_name = "blue"
model_name = "phi-ultrachat"
model_version = "3"
liveness_initial_delay = 900
request_timeout_ms = 120000
keep_endpoint = true
wait_timeout_s = 1800.5

[score]
enabled = false
temperature = 0
top_p = 1
do_sample = false
max_new_tokens = 50
sample_file = "score/sample.json"

[local]
base_model = "models/tiny"
device = "cpu"
max_steps = 5
port = 8123
host = "::1"
mlflow_tracking_uri = "sqlite:///mlruns.db"
registered_model_alias = "prod"
"""


def test_full_file_loads_every_key(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, FULL))
    assert config.backend == "azure"
    assert config.experiment_name == "my-experiment"
    assert config.effective_experiment_name == "my-experiment"
    assert config.workspace == WorkspaceConfig(SUB, "rg-ml", "ws-ml")
    assert config.model.version == "4"  # integers become version strings
    assert config.model.label is None  # a pinned version wins over the default label
    assert config.model.selector == {"version": "4"}
    assert config.model.allow_retired is True
    assert config.compute == ComputeConfig(
        cluster="a100-cluster",
        vm_size="Standard_NC48ads_A100_v4",
        max_instances=2,
        idle_time_before_scale_down=300,
        tier="low_priority",
        create_if_missing=False,
        nodes=2,
        check_quota=False,
    )
    assert config.data.sample == "random"
    assert config.data.rows == 100
    assert config.data.validation_pc == 10.5
    assert config.finetune.parameters == {
        "num_train_epochs": 3,
        "learning_rate": 5e-6,
        "lr_scheduler_type": "cosine",
        "apply_lora": "true",
        "apply_deepspeed": True,
    }
    assert config.finetune.selector == {"version": "0.0.82"}
    assert config.deploy.instance_count == 2
    assert config.deploy.wait_timeout_s == 1800.5
    assert config.score.parameters() == {
        "temperature": 0,
        "top_p": 1,
        "do_sample": False,
        "max_new_tokens": 50,
    }
    assert config.local.host == "::1"
    assert config.mlflow_tracking_uri == "sqlite:///mlruns.db"


def test_relative_paths_resolve_against_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # cwd differs from the file's folder
    config = load_run_config(write(folder, FULL))
    assert config.state_dir == folder / "state"
    assert config.data.source == str(folder / "data" / "chat.jsonl")  # a data file suffix
    assert config.data.output_dir == folder / "out" / "data"
    assert config.finetune.interface_file == folder / "components" / "spec.yaml"
    assert config.score.sample_file == folder / "score" / "sample.json"
    assert config.local.base_model == str(folder / "models" / "tiny")  # exists locally
    assert config.mlflow_tracking_uri == "sqlite:///mlruns.db"  # a URI, left alone


def test_hub_ids_and_absolute_paths_are_left_alone(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere"
    text = f"""
[data]
source = "HuggingFaceH4/ultrachat_200k"
output_dir = "{absolute.as_posix()}"
[local]
base_model = "sshleifer/tiny-gpt2"
"""
    config = load_run_config(write(tmp_path, text))
    assert config.data.source == "HuggingFaceH4/ultrachat_200k"
    assert config.data.output_dir == absolute
    assert config.local.base_model == "sshleifer/tiny-gpt2"


def test_dot_relative_source_resolves(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, '[data]\nsource = "./my_dataset"\n'))
    assert config.data.source == str(tmp_path / "my_dataset")


def test_mlflow_uri_defaults_to_sqlite_under_state_dir(tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path / "s")
    assert config.mlflow_tracking_uri == f"sqlite:///{(tmp_path / 's' / 'mlflow.db').as_posix()}"


@pytest.mark.parametrize("name", ["phi-finetune.toml", "phi-finetune.local.toml"])
def test_example_files_load(name: str) -> None:
    config = load_run_config(ROOT / "examples" / name)
    assert config.backend == ("azure" if name == "phi-finetune.toml" else "local")


def test_docs_example_loads_and_documents_every_key(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    load_run_config(write(tmp_path, block))
    for section, cls in [
        ("", RunConfig),
        ("workspace", WorkspaceConfig),
        ("model", ModelConfig),
        ("compute", ComputeConfig),
        ("data", DataConfig),
        ("finetune", FinetuneConfig),
        ("deploy", DeployConfig),
        ("score", ScoreConfig),
        ("local", LocalConfig),
        ("cost", CostConfig),
    ]:
        for field in attrs.fields(cls):
            if section == "" and field.name in {"workspace", "model", "compute", "data"}:
                continue
            if section == "" and field.name in {"finetune", "deploy", "score", "local", "cost"}:
                continue
            key = f"{section}.{field.name}" if section else field.name
            assert f"`{key}`" in text, f"docs/configuration.md does not document {key}"


# -- Python-built objects ----------------------------------------------------------------------


def test_sections_build_in_python_and_accept_paths_and_int_versions(tmp_path: Path) -> None:
    config = RunConfig(
        backend="azure",
        state_dir=str(tmp_path),
        model=ModelConfig(version=3),
        data=DataConfig(output_dir=str(tmp_path / "d"), source=tmp_path / "x.jsonl"),
        finetune=FinetuneConfig(parameters={"learning_rate": 1e-5}),
    )
    assert config.state_dir == tmp_path
    assert config.model.version == "3"
    assert config.data.output_dir == tmp_path / "d"
    assert config.data.source == str(tmp_path / "x.jsonl")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.backend = "local"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "key", "fragment"),
    [
        (lambda: ModelConfig(version="3", label="stable"), "model.label", "not both"),
        (lambda: ComputeConfig(cluster=None), "compute.cluster", "serverless"),
        (lambda: ComputeConfig(min_instances=2), "compute.min_instances", "above max_instances"),
        (lambda: ComputeConfig(nodes=2), "compute.nodes", "max_instances"),
        (lambda: DataConfig(split_pc=0), "data.split_pc", "greater than 0"),
        (lambda: DataConfig(split_pc=101.0), "data.split_pc", "at most 100"),
        (lambda: DataConfig(validation_pc=100), "data.validation_pc", "below 100"),
        (lambda: DataConfig(rows=0), "data.rows", "> 0"),
        (lambda: DataConfig(sample="first"), "data.sample", "'head', 'random'"),
        (lambda: DeployConfig(instance_count=0), "deploy.instance_count", ">= 1"),
        (lambda: DeployConfig(endpoint_name="1bad"), "deploy.endpoint_name", "not a valid"),
        (lambda: DeployConfig(endpoint_name="ab"), "deploy.endpoint_name", "3-32"),
        (lambda: ScoreConfig(top_p=0), "score.top_p", "greater than 0"),
        (lambda: ScoreConfig(max_new_tokens=True), "score.max_new_tokens", "expected integer"),
        (lambda: LocalConfig(host="0.0.0.0"), "local.host", "loopback"),
        (lambda: LocalConfig(port=70000), "local.port", "<= 65535"),
        (
            lambda: LocalConfig(registered_model_alias="latest"),
            "local.registered_model_alias",
            "reserves",
        ),
        (lambda: FinetuneConfig(parameters={"x": [1]}), "finetune.parameters", "list"),
        (lambda: FinetuneConfig(parameters={"bad name": 1}), "finetune.parameters", "identifiers"),
        (lambda: RunConfig(backend="cloud"), "backend", "'azure', 'local'"),
        (
            lambda: RunConfig(model="Phi-3"),  # type: ignore[arg-type]
            "model",
            "expected ModelConfig",
        ),
        (lambda: WorkspaceConfig(SUB, "rg", "w"), "workspace.workspace_name", "workspace name"),
        (lambda: WorkspaceConfig(SUB, "rg.", "ws-1"), "workspace.resource_group", "end with"),
        (lambda: WorkspaceConfig(SUB, "", "ws-1"), "workspace.resource_group", "empty"),
    ],
)
def test_python_values_are_checked(build: object, key: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    assert info.value.key == key
    assert fragment in str(info.value)
    assert info.value.source is None


def test_bad_subscription_id_says_how_to_fix() -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkspaceConfig("<SUBSCRIPTION_ID>", "rg", "ws-1")
    message = str(info.value)
    assert "placeholder" in message
    assert "az account show" in message
    assert "GUID" in message


def test_version_and_label_default_is_not_a_conflict() -> None:
    assert ModelConfig(version="3").selector == {"version": "3"}
    assert FinetuneConfig(component_version="0.0.82").selector == {"version": "0.0.82"}
    assert ComputeConfig(cluster=None, serverless=True, nodes=4).nodes == 4


# -- to_dict / to_toml / from_dict ---------------------------------------------------------------


def test_to_dict_from_dict_round_trip() -> None:
    config = RunConfig(
        backend="azure",
        workspace=WorkspaceConfig(SUB, "rg", "ws-1"),
        finetune=FinetuneConfig(parameters={"learning_rate": 5e-6, "apply_lora": "true"}),
        score=ScoreConfig(sample_file=Path("s.json")),
    )
    data = config.to_dict()
    assert data["state_dir"] == ".phi_finetune"
    assert data["experiment_name"] is None
    assert RunConfig.from_dict(data) == config


def test_to_toml_round_trip(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, FULL))
    text = config.to_toml()
    tomllib.loads(text)  # valid TOML
    again = load_run_config(write(tmp_path / "", text, name="again.toml"))
    assert again == config


def test_to_toml_escapes_strings(tmp_path: Path) -> None:
    config = RunConfig(experiment_name='quote " and \\ backslash ünï')
    again = load_run_config(write(tmp_path, config.to_toml()))
    assert again.experiment_name == config.experiment_name


def test_from_dict_names_the_source() -> None:
    with pytest.raises(ConfigurationError) as info:
        RunConfig.from_dict({"model": {"nme": "x"}}, source="journal of run 42")
    assert "journal of run 42" in str(info.value)
    assert info.value.key == "model.nme"


def test_from_dict_resolves_paths_only_with_base_dir(tmp_path: Path) -> None:
    assert RunConfig.from_dict({"state_dir": "s"}).state_dir == Path("s")
    assert RunConfig.from_dict({"state_dir": "s"}, base_dir=tmp_path).state_dir == tmp_path / "s"


# -- bad files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found") as info:
        load_run_config(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "phi-finetune.toml"
    path.write_bytes(b'backend = "\xff"\n')
    with pytest.raises(ConfigurationError, match="UTF-8"):
        load_run_config(path)


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'backend = "local"\n[model]\nname = \n')
    assert f"{tmp_path / 'phi-finetune.toml'}:3:" in str(err)
    assert "TOML syntax error" in str(err)


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[model]\nname = "a"\nname = "b"\n')
    assert ":3:" in str(err)


def test_unknown_section_with_suggestion(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[modle]\nname = 'x'\n")
    assert err.key == "modle"
    assert "unknown section" in str(err)
    assert "did you mean 'model'" in str(err)


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[compute]\nmax_instance = 2\n")
    assert err.key == "compute.max_instance"
    assert "did you mean 'max_instances'" in str(err)
    assert "allowed: cluster, serverless" in str(err)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'statedir = "x"\n')
    assert "did you mean 'state_dir'" in str(err)


def test_key_in_the_wrong_section_says_where_it_belongs(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[deploy]\nvm_size = "Standard_NC6s_v3"\n')
    assert "belongs in [compute]" in str(err)


def test_wrong_type(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[compute]\nmax_instances = "2"\n')
    assert err.key == "compute.max_instances"
    assert "expected integer, got str '2'" in str(err)


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[deploy]\ninstance_count = true\n")
    assert "expected integer, got bool" in str(err)


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    err = load_error(tmp_path, 'model = "Phi-3"\n')
    assert err.key == "model"
    assert "expected a table [model]" in str(err)


def test_bad_enum_value_with_suggestion(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[compute]\ntier = "lowpriority"\n')
    assert "'lowpriority' is not allowed" in str(err)
    assert "allowed: 'dedicated', 'low_priority'" in str(err)
    assert "did you mean 'low_priority'" in str(err)


def test_out_of_range(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[data]\nsplit_pc = 150\n")
    assert err.key == "data.split_pc"
    assert "0 < pc <= 100" in str(err)


def test_version_and_label_both_given_in_a_file(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[model]\nversion = "3"\nlabel = "latest"\n')
    assert err.key == "model.label"
    assert "not both" in str(err)


def test_workspace_section_needs_the_scope(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[workspace]\nresource_group = "rg"\n')
    assert "workspace.subscription_id: is required" in str(err)
    assert "workspace.workspace_name: is required" in str(err)


def test_bad_parameter_value(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[finetune.parameters]\nlearning_rate = [1, 2]\n")
    assert err.key == "finetune.parameters"


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    err = load_error(
        tmp_path,
        """
backend = "cloud"
[model]
nmae = "x"
[compute]
tier = "spot"
[local]
host = "0.0.0.0"
[score]
top_p = 2
""",
    )
    message = str(err)
    assert "5 problems" in message
    for key in ("backend", "model.nmae", "compute.tier", "local.host", "score.top_p"):
        assert f"  - {key}:" in message


def test_parent_relative_paths_are_normalised(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    config = load_run_config(write(folder, 'state_dir = "../state"\n'))
    assert config.state_dir == tmp_path / "state"
