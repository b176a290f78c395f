"""The typed step records: round trips through ``to_dict``/``from_dict`` and the errors that name
the step and the field when a journal's outputs do not read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from phi_finetune.backends import JournalObserver, StepContext
from phi_finetune.config import RunConfig
from phi_finetune.errors import RunStateError
from phi_finetune.journal import Journal
from phi_finetune.steps import (
    RECORD_TYPES,
    STEPS,
    DeploymentRecord,
    JobRecord,
    ModelRef,
    PlannedCompute,
    PlannedModel,
    PlanParameter,
    PlanRecord,
    PreparedDataRecord,
    ScoreRecord,
    TeardownRecord,
    TrainingSummary,
    ValidationSummary,
    plan_table,
    record_from_dict,
)

PARAMETERS = {
    "learning_rate": PlanParameter(5e-6, "user", "number"),
    "num_train_epochs": PlanParameter(1, "reference default", "integer"),
}

RECORDS: list[Any] = [
    PreparedDataRecord(
        out_dir="d",
        files={"train": "d/train.jsonl", "test_gen": "d/test_gen.jsonl"},
        counts={"train": 10},
        sha256={"train": "ab"},
        manifest="d/manifest.json",
        validation=ValidationSummary(errors=0, warnings=2, rows_invalid=1),
        assets={"train_file_path": "azureml:ultrachat-train:1"},
    ),
    PlanRecord(
        model=PlannedModel(
            name="Phi-3", version="15", id="azureml://x", inference_allow_list=("a",)
        ),
        component_id="azureml://registries/azureml/components/c/versions/0.0.82",
        component_version="0.0.82",
        compute=PlannedCompute(name="gpu", vm_size="NC24", gpus_per_node=1, will_create=True),
        parameters=PARAMETERS,
        display_name="phi3-ultrachat",
        experiment_name="exp",
        warnings=("w",),
        table="the table",
        details={"pipeline_yaml": "jobs: {}"},
    ),
    JobRecord(name="calm_kiwi", status="Completed", trained_model="azureml://jobs/calm_kiwi/x"),
    JobRecord(
        name="local-1",
        status="Completed",
        training=TrainingSummary(
            base_model="m",
            merged_dir="t/merged",
            final_loss=1.5,
            steps=4,
            history=({"step": 1, "loss": 2.0},),
        ),
    ),
    ModelRef(name="m", version="3", uri="azureml:m:3", id="/subs/x", created=True),
    ModelRef(name="m", version="1", uri="models:/m/1", tracking_uri="sqlite:///x", alias="a"),
    DeploymentRecord(endpoint_name="ep", deployment_name="demo", scoring_uri="https://x/score"),
    ScoreRecord(request={"input_data": {}}, request_file="s.json", reply="hi"),
    TeardownRecord(deleted=("endpoint:ep",)),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip_through_json(record: Any) -> None:
    data = json.loads(json.dumps(record.to_dict()))
    again = record_from_dict(record.STEP, data)
    assert again == record and type(again) is type(record)
    assert record_from_dict(record.STEP, {**data, "seconds": 1.5}) == record  # extra keys ignored


def test_every_step_has_a_record_type() -> None:
    assert tuple(RECORD_TYPES) == STEPS


def test_plan_str_is_the_table_and_model_str_is_name_colon_version() -> None:
    plan = RECORDS[1]
    assert str(plan) == "the table"
    assert plan.parameter_values == {"learning_rate": 5e-6, "num_train_epochs": 1}
    assert str(RECORDS[4]) == "m:3"


@pytest.mark.parametrize(
    ("step", "data", "message"),
    [
        ("register", {"name": "m", "version": "1"}, "step 'register', field 'uri' is missing"),
        (
            "register",
            {"name": 3, "version": "1", "uri": "u"},
            "step 'register', field 'name' is a int",
        ),
        ("fine_tune", [], "step 'fine_tune', field '(the whole output)' is a list"),
        (
            "plan",
            {
                "model": {"name": "m"},
                "parameters": {"lr": {"source": "user"}},
                "display_name": "d",
                "table": "t",
            },
            "field 'parameters.lr.value' is missing",
        ),
        (
            "plan",
            {"model": {"version": "1"}, "display_name": "d", "table": "t"},
            "field 'model.name' is missing",
        ),
        (
            "prepare_data",
            {"out_dir": "d", "files": {"train": "x"}, "counts": {"train": "ten"}},
            "field 'counts.train' is 'ten', not an integer",
        ),
        (
            "fine_tune",
            {"name": "j", "status": "Completed", "training": {"base_model": "b"}},
            "field 'training.merged_dir' is missing",
        ),
        ("score", {"request_file": "f", "reply": None}, "field 'request' is missing"),
        ("teardown", {"deleted": ["a", 1]}, "field 'deleted[1]' is a int"),
        ("deploy", {"endpoint_name": "e", "scoring_uri": True}, "field 'scoring_uri' is True"),
    ],
)
def test_bad_outputs_name_the_step_and_the_field(step: str, data: Any, message: str) -> None:
    with pytest.raises(RunStateError) as caught:
        record_from_dict(step, data, source="run r1")
    text = str(caught.value)
    assert message in text and text.startswith("run r1: ")
    assert "restore it" in text  # and how to fix it


def test_unknown_step() -> None:
    with pytest.raises(RunStateError, match="unknown step 'deploy_twice'"):
        record_from_dict("deploy_twice", {})


def test_plan_table_lists_parameters_with_their_source() -> None:
    text = plan_table([("model", "m 1")], PARAMETERS, ["careful"])
    lines = text.splitlines()
    assert lines[0] == "model  m 1"
    assert any(line.split() == ["learning_rate", "5e-06", "user"] for line in lines)
    assert lines[-1] == "warning: careful"


def test_step_context_gives_typed_access_and_says_what_is_missing(tmp_path: Any) -> None:
    journal = Journal.create(tmp_path, "r1", backend="local")
    ctx = StepContext(
        config=RunConfig(),
        journal=journal,
        run_dir=journal.run_dir,
        records={"register": RECORDS[4]},
    )
    assert ctx.model is RECORDS[4] and ctx.deployment is None
    with pytest.raises(RunStateError, match="step 'fine_tune' has not completed"):
        _ = ctx.job
    assert isinstance(ctx.observer, JournalObserver)


def test_journal_observer_records_before_and_after_and_cascades_endpoint_deletion(
    tmp_path: Any,
) -> None:
    journal = Journal.create(tmp_path, "r1", backend="azure")
    observer = JournalObserver(journal)
    observer.creating("endpoint", "ep")
    assert journal.resource("endpoint", "ep").state == "creating"  # type: ignore[union-attr]
    observer.created("endpoint", "ep")
    observer.created("deployment", "demo")
    observer.created("model", "m", "3")
    endpoint = journal.resource("endpoint", "ep")
    assert endpoint is not None and endpoint.state == "created" and endpoint.billable
    model = journal.resource("model", "m", version="3")
    assert model is not None and not model.billable
    observer.deleted("endpoint", "ep")
    assert journal.resources(billable_only=True, alive_only=True) == []
