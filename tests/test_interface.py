"""The pinned chat_completion_pipeline interface, reading live/YAML interfaces, comparing them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from phi_finetune.errors import ConfigurationError
from phi_finetune.interface import (
    ComponentInterface,
    InputSpec,
    compare_interfaces,
    interface_from_component,
    interface_from_dict,
    interface_from_yaml,
    load_pinned_interface,
)

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "chat_completion_pipeline_0.0.82.yaml"


def test_pinned_interface_has_every_input_and_output() -> None:
    pinned = load_pinned_interface()
    assert (pinned.name, pinned.version) == ("chat_completion_pipeline", "0.0.82")
    assert len(pinned.inputs) == 69
    assert set(pinned.outputs) == {"pytorch_model_folder", "mlflow_model_folder"}
    required = [n for n, s in pinned.inputs.items() if not s.optional]
    assert required == ["task_name"]


def test_pinned_interface_types_enums_bounds_defaults() -> None:
    p = load_pinned_interface()
    assert p.input("deepspeed_stage") == InputSpec(
        "deepspeed_stage", "string", True, "2", ("2", "3")
    )
    assert p.input("precision").enum == ("32", "16")
    assert p.input("apply_lora").is_string_boolean
    assert p.input("optim").enum == ("adamw_torch", "adafactor")
    assert p.input("num_train_epochs").min == 1
    assert p.input("adam_epsilon").default == pytest.approx(1e-8)  # YAML 1.1 reads it as text
    assert p.input("learning_rate").default == pytest.approx(2e-5)
    assert p.input("mlflow_model_path").is_path
    assert not p.input("mlflow_model_path").is_literal


def test_interface_from_yaml_fixture_matches_pinned() -> None:
    assert compare_interfaces(load_pinned_interface(), interface_from_yaml(FIXTURE)).identical


def test_interface_from_local_component_matches_pinned() -> None:
    from azure.ai.ml import load_component

    live = interface_from_component(load_component(source=str(FIXTURE)))
    report = compare_interfaces(load_pinned_interface(), live)
    assert report.identical, report.summary()


def test_interface_from_component_reads_inputs_attributes() -> None:
    component = SimpleNamespace(
        name="c",
        version="2",
        type="pipeline",
        inputs={
            "a": SimpleNamespace(
                type="integer", default="3", optional=True, min="1", max=None, enum=None, mode=None
            ),
        },
        outputs={"o": SimpleNamespace(type="mlflow_model")},
    )
    iface = interface_from_component(component)
    assert iface.input("a").default == 3 and iface.input("a").min == 1
    assert iface.outputs["o"].type == "mlflow_model"


def _variant(**changes: dict[str, object] | None) -> ComponentInterface:
    data = load_pinned_interface().to_dict()
    for name, spec in changes.items():
        if spec is None:
            del data["inputs"][name]
        else:
            data["inputs"][name] = spec
    data["version"] = "0.0.99"
    return interface_from_dict(data)


def test_compare_reports_added_inputs_as_passthrough() -> None:
    report = compare_interfaces(
        load_pinned_interface(), _variant(new_knob={"type": "integer", "optional": True})
    )
    assert report.added == ("new_knob",)
    assert not report.breaking


def test_compare_reports_removed_and_retyped_inputs() -> None:
    live = _variant(apply_ort=None, lora_r={"type": "string", "optional": True})
    report = compare_interfaces(load_pinned_interface(), live)
    assert report.removed == ("apply_ort",)
    assert report.retyped == ("lora_r",)
    assert {c.name for c in report.breaking} == {"apply_ort", "lora_r"}
    assert "apply_ort" in report.summary()


def test_compare_with_previous_published_version() -> None:
    old = (
        interface_from_yaml(
            "/work/shared/reference/azureml-assets/pipeline_components/chat_completion/"
            "spec_v0.0.81_at_dd8561ff35.yaml"
        )
        if Path("/work/shared/reference").is_dir()
        else None
    )
    if old is None:
        pytest.skip("reference assets not present")
    report = compare_interfaces(old, load_pinned_interface())
    assert set(report.added) == {"finetune_config_path", "trust_remote_code"}


def test_interface_from_yaml_errors_are_configuration_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="mapping"):
        interface_from_yaml(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        interface_from_yaml(tmp_path / "missing.yaml")
