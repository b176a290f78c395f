"""Fine-tune parameters for the local trainer: defaults, coercion, range checks, what is ignored.

Parameters are named like the Azure ``chat_completion_pipeline`` inputs and may be strings
(``"16"``, ``"true"``). The ones that only mean something on Azure ML (DeepSpeed, ORT, computes,
instance types, ...) and unknown ones are reported as :class:`IgnoredParameter`, never silently
dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from phi_finetune.config.checks import coerce
from phi_finetune.errors import ParameterError, ParameterProblem

__all__ = [
    "AZURE_ONLY_PARAMETERS",
    "EVALUATION_STRATEGIES",
    "LOCAL_PARAMETERS",
    "PRECISIONS",
    "SCHEDULERS",
    "IgnoredParameter",
    "resolve_parameters",
]

#: Parameters the local trainer uses: name -> (type, default).
LOCAL_PARAMETERS: Mapping[str, tuple[type, Any]] = {
    "num_train_epochs": (int, 1),
    "max_steps": (int, -1),
    "learning_rate": (float, 2e-4),
    "lr_scheduler_type": (str, "linear"),
    "warmup_steps": (int, 0),
    "weight_decay": (float, 0.0),
    "lora_r": (int, 8),
    "lora_alpha": (int, 16),
    "lora_dropout": (float, 0.05),
    "per_device_train_batch_size": (int, 4),
    "per_device_eval_batch_size": (int, 4),
    "gradient_accumulation_steps": (int, 1),
    "max_seq_length": (int, 512),
    "seed": (int, 42),
    "precision": (str, "auto"),
    "logging_steps": (int, 1),
    "merge_lora_weights": (bool, True),
    # Evaluation cadence and early stopping, named as in the Azure component.
    "evaluation_strategy": (str, "epoch"),
    "eval_steps": (int, 500),
    "evaluation_steps_interval": (float, 0.0),
    "apply_early_stopping": (bool, False),
    "early_stopping_patience": (int, 1),
    "early_stopping_threshold": (float, 0.0),
    # Checkpoints: resume_from_checkpoint and save_total_limit as in the Azure component;
    # save_steps (Hugging Face TrainingArguments' name, the component has none) is local only.
    "save_steps": (int, 100),
    "save_total_limit": (int, -1),
    "resume_from_checkpoint": (bool, False),
    # Memory: recompute activations in the backward pass (local only).
    "gradient_checkpointing": (bool, False),
}

#: Values ``evaluation_strategy`` accepts (the Azure component's enum).
EVALUATION_STRATEGIES = ("epoch", "steps", "disable")

#: Pipeline inputs that only mean something on Azure ML (reported as ignored).
AZURE_ONLY_PARAMETERS: Mapping[str, str] = {
    "apply_deepspeed": "DeepSpeed is not used by the local backend",
    "deepspeed_stage": "DeepSpeed is not used by the local backend",
    "ds_config": "DeepSpeed is not used by the local backend",
    "apply_ort": "ONNX Runtime training is not used by the local backend",
    "number_of_gpu_to_use_finetuning": (
        "set by the job from the VM size; for several local processes set [local] processes"
    ),
    "num_nodes_finetune": "the local backend runs on this machine only",
    "shm_size_finetune": "shared memory size applies to Azure ML containers only",
    "apply_lora": "the local backend always trains LoRA adapters",
    "auto_find_batch_size": "the local backend uses the given batch size",
}
_AZURE_ONLY_PREFIXES = ("compute_", "instance_type_")

#: Values ``lr_scheduler_type`` accepts (transformers' scheduler names).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
#: Values ``precision`` accepts; CPU training always runs in float32.
PRECISIONS = ("auto", "32", "fp32", "16", "fp16", "bf16")


@attrs.frozen
class IgnoredParameter:
    """A parameter the local backend did not use, and why."""

    name: str
    value: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "reason": self.reason}


def resolve_parameters(
    parameters: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], tuple[IgnoredParameter, ...]]:
    """Resolve Azure-named fine-tune parameters for the local trainer.

    Returns the values used (defaults filled in, strings converted) and the ignored ones.
    Raises :class:`~phi_finetune.errors.ParameterError` listing every invalid value.
    """
    resolved: dict[str, Any] = {name: default for name, (_, default) in LOCAL_PARAMETERS.items()}
    ignored: list[IgnoredParameter] = []
    problems: list[ParameterProblem] = []
    for name, value in (parameters or {}).items():
        spec = LOCAL_PARAMETERS.get(name)
        if spec is None:
            ignored.append(IgnoredParameter(name, value, _why_ignored(name)))
            continue
        if value is None:
            continue
        try:
            resolved[name] = coerce(value, spec[0], mode="loose")
        except (TypeError, ValueError):
            problems.append(ParameterProblem(name, value, f"expected {spec[0].__name__}"))
    problems.extend(_range_problems(resolved))
    if problems:
        raise ParameterError(
            "invalid fine-tuning parameters for the local backend", problems=problems
        )
    return resolved, tuple(ignored)


def _why_ignored(name: str) -> str:
    if name in AZURE_ONLY_PARAMETERS:
        return AZURE_ONLY_PARAMETERS[name]
    if name.startswith(_AZURE_ONLY_PREFIXES):
        return "Azure ML compute settings do not apply to the local backend"
    return "not a parameter the local backend knows"


def _range_problems(p: Mapping[str, Any]) -> list[ParameterProblem]:
    checks: list[tuple[str, bool, str, str]] = [
        ("num_train_epochs", p["num_train_epochs"] >= 1, "must be >= 1", ">= 1"),
        ("max_steps", p["max_steps"] == -1 or p["max_steps"] >= 1, "must be -1 or >= 1", ""),
        ("learning_rate", p["learning_rate"] > 0, "must be > 0", "> 0"),
        ("warmup_steps", p["warmup_steps"] >= 0, "must be >= 0", ">= 0"),
        ("weight_decay", p["weight_decay"] >= 0, "must be >= 0", ">= 0"),
        ("lora_r", p["lora_r"] >= 1, "must be >= 1", ">= 1"),
        ("lora_alpha", p["lora_alpha"] >= 1, "must be >= 1", ">= 1"),
        ("lora_dropout", 0 <= p["lora_dropout"] < 1, "must be in [0, 1)", "[0, 1)"),
        ("per_device_train_batch_size", p["per_device_train_batch_size"] >= 1, "must be >= 1", ""),
        ("per_device_eval_batch_size", p["per_device_eval_batch_size"] >= 1, "must be >= 1", ""),
        ("gradient_accumulation_steps", p["gradient_accumulation_steps"] >= 1, "must be >= 1", ""),
        ("max_seq_length", p["max_seq_length"] == -1 or p["max_seq_length"] >= 8, "too small", ""),
        ("logging_steps", p["logging_steps"] >= 1, "must be >= 1", ">= 1"),
        ("eval_steps", p["eval_steps"] >= 1, "must be >= 1", ">= 1"),
        (
            "evaluation_steps_interval",
            0 <= p["evaluation_steps_interval"] <= 1,
            "must be a fraction of an epoch",
            "[0, 1] (0: use eval_steps)",
        ),
        ("early_stopping_patience", p["early_stopping_patience"] >= 1, "must be >= 1", ">= 1"),
        ("early_stopping_threshold", p["early_stopping_threshold"] >= 0, "must be >= 0", ">= 0"),
        ("save_steps", p["save_steps"] >= 0, "must be >= 0", ">= 0 (0: no step checkpoints)"),
        (
            "save_total_limit",
            p["save_total_limit"] == -1 or p["save_total_limit"] >= 1,
            "must be -1 or >= 1",
            "-1 (keep all) or >= 1",
        ),
        (
            "evaluation_strategy",
            p["evaluation_strategy"] in EVALUATION_STRATEGIES,
            "unknown evaluation strategy",
            ", ".join(EVALUATION_STRATEGIES),
        ),
        (
            "lr_scheduler_type",
            p["lr_scheduler_type"] in SCHEDULERS,
            "unknown scheduler",
            ", ".join(SCHEDULERS),
        ),
        (
            "precision",
            str(p["precision"]) in PRECISIONS,
            "unknown precision",
            ", ".join(PRECISIONS),
        ),
    ]
    return [ParameterProblem(n, p[n], msg, allowed) for n, ok, msg, allowed in checks if not ok]
