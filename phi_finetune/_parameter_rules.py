"""The cross-field and range rules the fine-tune code enforces at run time.

Each rule takes the merged parameter values and returns the problems it finds;
:data:`CROSS_FIELD_RULES` (re-exported by :mod:`phi_finetune.parameters`) lists them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from phi_finetune.errors import ParameterProblem

__all__ = ["CROSS_FIELD_RULES", "Rule"]

Values = Mapping[str, Any]
Rule = Callable[[Values], list[ParameterProblem]]


def _num(values: Values, name: str) -> float | None:
    value = values.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _rule_learning_rate_positive(v: Values) -> list[ParameterProblem]:
    lr = _num(v, "learning_rate")
    if lr is not None and lr <= 0:
        return [
            ParameterProblem("learning_rate", v["learning_rate"], "must be > 0", "> 0, e.g. 5e-6")
        ]
    return []


def _rule_early_stopping_needs_evaluation(v: Values) -> list[ParameterProblem]:
    if v.get("apply_early_stopping") == "true" and v.get("evaluation_strategy") not in (
        "steps",
        "epoch",
    ):
        return [
            ParameterProblem(
                "evaluation_strategy",
                v.get("evaluation_strategy"),
                "apply_early_stopping='true' needs evaluation during training",
                "'steps' or 'epoch' (or set apply_early_stopping='false')",
            )
        ]
    return []


def _rule_deepspeed_excludes_auto_batch(v: Values) -> list[ParameterProblem]:
    if v.get("apply_deepspeed") == "true" and v.get("auto_find_batch_size") == "true":
        return [
            ParameterProblem(
                "auto_find_batch_size",
                "true",
                "cannot be used with apply_deepspeed='true'",
                "'false', or set apply_deepspeed='false'",
            )
        ]
    return []


def _rule_stage3_excludes_ort(v: Values) -> list[ParameterProblem]:
    if (
        v.get("apply_deepspeed") == "true"
        and v.get("deepspeed_stage") == "3"
        and v.get("apply_ort") == "true"
    ):
        return [
            ParameterProblem(
                "apply_ort",
                "true",
                "ONNX Runtime training cannot be used with DeepSpeed stage 3",
                "'false', or deepspeed_stage='2'",
            )
        ]
    return []


def _rule_eval_steps(v: Values) -> list[ParameterProblem]:
    if v.get("evaluation_strategy") != "steps":
        return []
    steps, interval = _num(v, "eval_steps"), _num(v, "evaluation_steps_interval")
    if (steps is None or steps <= 0) and (interval is None or interval <= 0):
        return [
            ParameterProblem(
                "eval_steps",
                v.get("eval_steps"),
                "evaluation_strategy='steps' needs eval_steps > 0 or evaluation_steps_interval > 0",
                "a positive integer",
            )
        ]
    return []


def _rule_evaluation_interval_fraction(v: Values) -> list[ParameterProblem]:
    interval = _num(v, "evaluation_steps_interval")
    if interval is not None and not 0 <= interval <= 1:
        return [
            ParameterProblem(
                "evaluation_steps_interval",
                v["evaluation_steps_interval"],
                "is a fraction of an epoch's steps",
                "0 (off) to 1",
            )
        ]
    return []


def _rule_logging_steps(v: Values) -> list[ParameterProblem]:
    steps = _num(v, "logging_steps")
    if v.get("logging_strategy") == "steps" and steps is not None and steps <= 0:
        return [
            ParameterProblem(
                "logging_steps", v["logging_steps"], "logging_strategy='steps' needs > 0", "> 0"
            )
        ]
    return []


def _rule_minus_one_or_positive(name: str, meaning: str) -> Rule:
    def rule(v: Values) -> list[ParameterProblem]:
        value = _num(v, name)
        if value is not None and value != -1 and value < 1:
            return [ParameterProblem(name, v[name], "must be -1 or a positive integer", meaning)]
        return []

    rule.__name__ = f"_rule_{name}_minus_one_or_positive"
    return rule


def _rule_range(name: str, low: float, high: float, *, high_open: bool = False) -> Rule:
    def rule(v: Values) -> list[ParameterProblem]:
        value = _num(v, name)
        if value is None:
            return []
        bad = value < low or (value >= high if high_open else value > high)
        if bad:
            allowed = f"{low} <= {name} {'<' if high_open else '<='} {high}"
            return [ParameterProblem(name, v[name], "is out of range", allowed)]
        return []

    rule.__name__ = f"_rule_{name}_range"
    return rule


def _rule_positive(name: str, *, strict: bool = True) -> Rule:
    def rule(v: Values) -> list[ParameterProblem]:
        value = _num(v, name)
        if value is not None and (value <= 0 if strict else value < 0):
            allowed = "> 0" if strict else ">= 0"
            return [ParameterProblem(name, v[name], f"must be {allowed}", allowed)]
        return []

    rule.__name__ = f"_rule_{name}_positive"
    return rule


def _rule_lora_dimensions(v: Values) -> list[ParameterProblem]:
    if v.get("apply_lora") != "true":
        return []
    problems = []
    for name in ("lora_r", "lora_alpha"):
        value = _num(v, name)
        if value is not None and value < 1:
            problems.append(ParameterProblem(name, v[name], "must be >= 1 with apply_lora", ">= 1"))
    return problems


def _rule_early_stopping_patience(v: Values) -> list[ParameterProblem]:
    patience = _num(v, "early_stopping_patience")
    if v.get("apply_early_stopping") == "true" and patience is not None and patience < 1:
        return [
            ParameterProblem(
                "early_stopping_patience", v["early_stopping_patience"], "must be >= 1", ">= 1"
            )
        ]
    return []


#: Cross-field and range rules: (name, rule). Each returns the problems it finds.
CROSS_FIELD_RULES: tuple[tuple[str, Rule], ...] = (
    ("learning_rate > 0", _rule_learning_rate_positive),
    ("early stopping needs an evaluation strategy", _rule_early_stopping_needs_evaluation),
    ("deepspeed excludes auto_find_batch_size", _rule_deepspeed_excludes_auto_batch),
    ("deepspeed stage 3 excludes ORT", _rule_stage3_excludes_ort),
    ("evaluation_strategy steps needs eval steps", _rule_eval_steps),
    ("evaluation_steps_interval is a fraction", _rule_evaluation_interval_fraction),
    ("logging_strategy steps needs logging_steps > 0", _rule_logging_steps),
    ("early_stopping_patience >= 1", _rule_early_stopping_patience),
    ("lora_r and lora_alpha >= 1", _rule_lora_dimensions),
    ("lora_dropout in [0, 1)", _rule_range("lora_dropout", 0.0, 1.0, high_open=True)),
    ("adam_beta1 in [0, 1)", _rule_range("adam_beta1", 0.0, 1.0, high_open=True)),
    ("adam_beta2 in [0, 1)", _rule_range("adam_beta2", 0.0, 1.0, high_open=True)),
    ("adam_epsilon > 0", _rule_positive("adam_epsilon")),
    ("weight_decay >= 0", _rule_positive("weight_decay", strict=False)),
    ("max_grad_norm >= 0", _rule_positive("max_grad_norm", strict=False)),
    ("warmup_steps >= 0", _rule_positive("warmup_steps", strict=False)),
    ("gradient_accumulation_steps >= 1", _rule_positive("gradient_accumulation_steps")),
    ("dataloader_num_workers >= 0", _rule_positive("dataloader_num_workers", strict=False)),
    ("max_steps -1 or >= 1", _rule_minus_one_or_positive("max_steps", "-1 (use epochs) or >= 1")),
    (
        "max_seq_length -1 or >= 1",
        _rule_minus_one_or_positive("max_seq_length", "-1 (model max) or >= 1"),
    ),
    (
        "save_total_limit -1 or >= 1",
        _rule_minus_one_or_positive("save_total_limit", "-1 (keep all) or >= 1"),
    ),
    (
        "eval_accumulation_steps -1 or >= 1",
        _rule_minus_one_or_positive("eval_accumulation_steps", "-1 (off) or >= 1"),
    ),
)
