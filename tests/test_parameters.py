"""FineTuneParameters: merge order with sources, type/enum/bound checks, cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest

from phi_finetune.azure.foundation_model import reference_model
from phi_finetune.errors import ParameterError
from phi_finetune.parameters import (
    CROSS_FIELD_RULES,
    REFERENCE_DEFAULTS,
    FineTuneParameters,
    ParameterSource,
    display_name,
    effective_batch_size,
)

REFERENCE_MODEL_DEFAULTS = dict(reference_model().model_specific_defaults)


def _problems(user: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ParameterError) as info:
        FineTuneParameters.build(user, **kwargs)
    return {p.name: f"{p.message} | {p.allowed}" for p in info.value.problems}


def test_reference_parameter_set_plans_successfully() -> None:
    params = FineTuneParameters.build(
        dict(REFERENCE_DEFAULTS), model_defaults=REFERENCE_MODEL_DEFAULTS
    )
    assert params["deepspeed_stage"] == "2"  # int 2 from the model tag, normalised
    assert params["precision"] == "16"
    assert params["learning_rate"] == 5e-6
    assert params.dropped == ("learning_rate_min", "learning_rate_max")
    assert "learning_rate_min" in params.warnings[0]
    assert "learning_rate_min" not in params.as_kwargs()


def test_merge_order_and_sources() -> None:
    params = FineTuneParameters.build(
        {"num_train_epochs": 5},
        model_defaults={"num_train_epochs": 1, "lr_scheduler_type": "linear"},
    )
    assert params.values["num_train_epochs"].value == 5
    assert params.source("num_train_epochs") is ParameterSource.USER
    assert params.source("lr_scheduler_type") is ParameterSource.MODEL_DEFAULT
    assert params["lr_scheduler_type"] == "linear"
    assert params.source("apply_lora") is ParameterSource.REFERENCE_DEFAULT
    assert params.source("optim") is ParameterSource.COMPONENT_DEFAULT
    assert "optim" not in params.as_kwargs()
    assert "optim" in params.as_kwargs(include_component_defaults=True)
    # inputs the job sets itself are not listed as parameters
    assert "compute_finetune" not in params.values


def test_model_defaults_as_strings_are_coerced() -> None:
    params = FineTuneParameters.build(
        None, model_defaults={"learning_rate": "5e-6", "num_train_epochs": "2", "precision": 16}
    )
    assert params["learning_rate"] == 5e-6
    assert params["num_train_epochs"] == 2


def test_merging_learning_rate_min_is_caught_with_a_clear_message() -> None:
    # the reference passes model_specific_defaults on as pipeline kwargs
    problems = _problems(REFERENCE_MODEL_DEFAULTS)
    assert set(problems) == {"learning_rate_min", "learning_rate_max"}
    assert "not a pipeline input" in problems["learning_rate_min"]
    assert "did you mean: learning_rate" in problems["learning_rate_min"]


def test_unknown_key_names_the_closest_inputs() -> None:
    problems = _problems({"num_train_epoch": 2})
    assert "num_train_epochs" in problems["num_train_epoch"]


def test_job_managed_inputs_are_refused() -> None:
    problems = _problems({"compute_finetune": "x", "mlflow_model_path": "y"})
    assert "compute" in problems["compute_finetune"]
    assert set(problems) == {"compute_finetune", "mlflow_model_path"}


def test_string_booleans_accept_python_bools() -> None:
    params = FineTuneParameters.build({"apply_lora": False, "apply_early_stopping": "True"})
    assert params["apply_lora"] == "false"
    assert params["apply_early_stopping"] == "true"


def test_deepspeed_stage_and_precision_accept_ints() -> None:
    params = FineTuneParameters.build({"deepspeed_stage": 3, "precision": 32})
    assert (params["deepspeed_stage"], params["precision"]) == ("3", "32")


# one test per per-value rule ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "name", "fragment"),
    [
        ({"num_train_epochs": "3"}, "num_train_epochs", "must be an integer"),
        ({"num_train_epochs": 2.0}, "num_train_epochs", "must be an integer"),
        ({"num_train_epochs": True}, "num_train_epochs", "must be an integer"),
        ({"learning_rate": "fast"}, "learning_rate", "must be a number"),
        ({"learning_rate": float("nan")}, "learning_rate", "finite"),
        ({"lr_scheduler_type": 3.5}, "lr_scheduler_type", "must be a string"),
        ({"lr_scheduler_type": "cosine_annealing"}, "lr_scheduler_type", "allowed values"),
        ({"optim": "sgd"}, "optim", "allowed values"),
        ({"deepspeed_stage": 1}, "deepspeed_stage", "allowed values"),
        ({"precision": "bf16"}, "precision", "allowed values"),
        ({"evaluation_strategy": "no"}, "evaluation_strategy", "allowed values"),
        ({"apply_lora": "yes"}, "apply_lora", "allowed values"),
        ({"shm_size_finetune": True}, "shm_size_finetune", "not a bool"),
        ({"num_train_epochs": 0}, "num_train_epochs", "below the minimum 1"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size", "minimum"),
        ({"deepspeed": 5}, "deepspeed", "must be a path"),
        ({"deepspeed": "C:\\ds.json"}, "deepspeed", "rejects"),
    ],
)
def test_value_rules(user: dict[str, Any], name: str, fragment: str) -> None:
    problems = _problems(user)
    assert name in problems, problems
    assert fragment in problems[name]


# one test per cross-field rule -----------------------------------------------------------------
CROSS_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "learning_rate > 0": ({"learning_rate": 0.0}, "learning_rate"),
    "early stopping needs an evaluation strategy": (
        {"apply_early_stopping": "true", "evaluation_strategy": "disable"},
        "evaluation_strategy",
    ),
    "deepspeed excludes auto_find_batch_size": (
        {"apply_deepspeed": "true", "auto_find_batch_size": "true"},
        "auto_find_batch_size",
    ),
    "deepspeed stage 3 excludes ORT": (
        {"apply_deepspeed": "true", "deepspeed_stage": "3", "apply_ort": "true"},
        "apply_ort",
    ),
    "evaluation_strategy steps needs eval steps": (
        {"evaluation_strategy": "steps", "eval_steps": 0, "evaluation_steps_interval": 0.0},
        "eval_steps",
    ),
    "evaluation_steps_interval is a fraction": (
        {"evaluation_steps_interval": 1.5},
        "evaluation_steps_interval",
    ),
    "logging_strategy steps needs logging_steps > 0": (
        {"logging_strategy": "steps", "logging_steps": 0},
        "logging_steps",
    ),
    "early_stopping_patience >= 1": (
        {"apply_early_stopping": "true", "early_stopping_patience": 0},
        "early_stopping_patience",
    ),
    "lora_r and lora_alpha >= 1": ({"apply_lora": "true", "lora_r": 0}, "lora_r"),
    "lora_dropout in [0, 1)": ({"lora_dropout": 1.0}, "lora_dropout"),
    "adam_beta1 in [0, 1)": ({"adam_beta1": -0.1}, "adam_beta1"),
    "adam_beta2 in [0, 1)": ({"adam_beta2": 1.0}, "adam_beta2"),
    "adam_epsilon > 0": ({"adam_epsilon": 0.0}, "adam_epsilon"),
    "weight_decay >= 0": ({"weight_decay": -0.01}, "weight_decay"),
    "max_grad_norm >= 0": ({"max_grad_norm": -1.0}, "max_grad_norm"),
    "warmup_steps >= 0": ({"warmup_steps": -5}, "warmup_steps"),
    "gradient_accumulation_steps >= 1": (
        {"gradient_accumulation_steps": 0},
        "gradient_accumulation_steps",
    ),
    "dataloader_num_workers >= 0": ({"dataloader_num_workers": -1}, "dataloader_num_workers"),
    "max_steps -1 or >= 1": ({"max_steps": 0}, "max_steps"),
    "max_seq_length -1 or >= 1": ({"max_seq_length": -2}, "max_seq_length"),
    "save_total_limit -1 or >= 1": ({"save_total_limit": 0}, "save_total_limit"),
    "eval_accumulation_steps -1 or >= 1": (
        {"eval_accumulation_steps": 0},
        "eval_accumulation_steps",
    ),
}


def test_every_cross_field_rule_has_a_case() -> None:
    assert {name for name, _ in CROSS_FIELD_RULES} == set(CROSS_CASES)


@pytest.mark.parametrize("rule", sorted(CROSS_CASES))
def test_cross_field_rule(rule: str) -> None:
    user, name = CROSS_CASES[rule]
    problems = _problems(user)
    assert name in problems, problems


def test_all_problems_are_reported_together() -> None:
    problems = _problems(
        {"learning_rate": -1.0, "optim": "sgd", "num_train_epoch": 1, "auto_find_batch_size": True}
    )
    assert {"learning_rate", "optim", "num_train_epoch", "auto_find_batch_size"} <= set(problems)


def test_invalid_model_default_names_its_source() -> None:
    problems = _problems({}, model_defaults={"optim": "lion"})
    assert "from the model default" in problems["optim"]


def test_deepspeed_config_without_apply_deepspeed_warns() -> None:
    params = FineTuneParameters.build({"apply_deepspeed": "false", "deepspeed": "azureml:ds:1"})
    assert any("deepspeed config" in w for w in params.warnings)


def test_display_name_matches_the_reference_format() -> None:
    params = FineTuneParameters.build(
        dict(REFERENCE_DEFAULTS), model_defaults=REFERENCE_MODEL_DEFAULTS
    )
    assert (
        params.display_name("Phi-3-mini-4k-instruct", 1, 1)
        == "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1"
    )
    bare = display_name("m", {}, 4, 2)
    assert bare == "m-ultrachat-bs8-linear-nods-nolora-save_limit-1-seqlen-1"


def test_effective_batch_size() -> None:
    assert effective_batch_size(2, 4, 8, 2) == 128
    params = FineTuneParameters.build(
        {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}
    )
    assert params.effective_batch_size(4, 2) == 48


def test_passthrough_inputs_of_a_newer_live_component() -> None:
    params = FineTuneParameters.build({"brand_new": 7}, passthrough={"brand_new"})
    assert params["brand_new"] == 7
