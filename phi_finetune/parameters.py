"""Step 8-9: the fine-tuning parameters, merged, traced to their source and validated.

Merge order (later wins)::

    component defaults < reference defaults < the model's model_specific_defaults < user values

Every value is checked against the component interface (type, enum, bounds) and against the
cross-field rules the fine-tune code enforces at run time (:data:`CROSS_FIELD_RULES`), so a
mistake fails on the user's machine instead of 20 minutes into a paid job. All problems are
reported together in one :class:`~phi_finetune.errors.ParameterError`.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from phi_finetune.errors import ParameterError, ParameterProblem
from phi_finetune.interface import ComponentInterface, InputSpec, load_pinned_interface

__all__ = [
    "CROSS_FIELD_RULES",
    "JOB_MANAGED_INPUTS",
    "REFERENCE_DEFAULTS",
    "FineTuneParameters",
    "ParameterSource",
    "ParameterValue",
    "display_name",
    "effective_batch_size",
]

logger = logging.getLogger(__name__)


class ParameterSource(enum.StrEnum):
    """Where a parameter's value came from."""

    COMPONENT_DEFAULT = "component default"
    REFERENCE_DEFAULT = "reference default"
    MODEL_DEFAULT = "model default"
    USER = "user"


#: The reference notebook's training and optimization parameters (workflow step 8).
REFERENCE_DEFAULTS: Mapping[str, Any] = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "learning_rate": 5e-6,
    "lr_scheduler_type": "cosine",
    "apply_lora": "true",
    "apply_deepspeed": "true",
    "deepspeed_stage": "2",
}

#: Inputs the job sets itself (model, data, compute); not accepted as parameters.
JOB_MANAGED_INPUTS: Mapping[str, str] = {
    "mlflow_model_path": "set from the foundation model (model.name / model.version)",
    "pytorch_model_path": "the job fine-tunes the registry model given as model.name",
    "huggingface_id": "the job fine-tunes the registry model given as model.name",
    "train_file_path": "pass the training data to FineTuneJob(train_data=...)",
    "validation_file_path": "pass the validation data to FineTuneJob(validation_data=...)",
    "test_file_path": "pass the test data to FineTuneJob(test_data=...)",
    "compute_model_import": "set from the compute selection (compute.cluster / serverless)",
    "compute_preprocess": "set from the compute selection (compute.cluster / serverless)",
    "compute_finetune": "set from the compute selection (compute.cluster / serverless)",
    "compute_model_evaluation": "set from the compute selection (compute.cluster / serverless)",
    "number_of_gpu_to_use_finetuning": "set from the GPUs per node of the chosen VM size",
    "num_nodes_finetune": "set from compute.nodes",
    "instance_type_finetune": "set from compute.vm_size when compute is serverless",
    "instance_type_model_evaluation": "set from compute.vm_size when compute is serverless",
}

_MODEL_DEFAULT_ONLY = frozenset({"learning_rate_min", "learning_rate_max"})
_INT_AS_STRING = frozenset({"deepspeed_stage", "precision"})
_BAD_PATH_CHARS = ("\\", "'")


@attrs.frozen
class ParameterValue:
    """One input's value and where it came from."""

    name: str
    value: Any
    source: ParameterSource
    type: str = "string"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": str(self.source), "type": self.type}


def _close(name: str, names: list[str]) -> str:
    matches = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not matches:
        matches = [n for n in names if name.lower() in n.lower() or n.lower() in name.lower()][:3]
    return ", ".join(matches) if matches else ""


def _coerce(
    spec: InputSpec, value: Any, source: ParameterSource
) -> tuple[Any, ParameterProblem | None]:
    """Normalise ``value`` for ``spec``; a problem when its type or enum is wrong."""
    name = spec.name
    origin = "" if source is ParameterSource.USER else f" (from the {source})"
    lenient = source is not ParameterSource.USER  # tags hold strings: "5e-6", "1"
    if value is None:
        if spec.optional:
            return None, None
        return None, ParameterProblem(name, value, f"is required{origin}", spec.describe_allowed())
    if spec.is_path:
        if not isinstance(value, str) and not hasattr(value, "path"):
            msg = f"must be a path or asset id (string) for a {spec.type} input{origin}"
            return value, ParameterProblem(name, value, msg, f"{spec.type} path")
        path = value if isinstance(value, str) else str(value.path)
        if any(c in path for c in _BAD_PATH_CHARS):
            msg = f"contains \\ or ' which the service rejects in paths{origin}"
            return value, ParameterProblem(name, value, msg, "a path without \\ and '")
        return value, None
    if spec.type == "string":
        if isinstance(value, bool):
            if spec.is_string_boolean:
                value = "true" if value else "false"
            else:
                msg = f"must be a string, not a bool{origin}"
                return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        elif isinstance(value, int) and (name in _INT_AS_STRING or lenient):
            value = str(value)
        elif isinstance(value, float) and lenient and value.is_integer():
            value = str(int(value))
        elif not isinstance(value, str):
            msg = f"must be a string, not {type(value).__name__}{origin}"
            return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        if spec.is_string_boolean and value.strip().lower() in ("true", "false"):
            value = value.strip().lower()
        if spec.enum is not None and value not in spec.enum:
            return value, ParameterProblem(
                name, value, f"is not one of the allowed values{origin}", spec.describe_allowed()
            )
        return value, None
    if spec.type == "integer":
        if isinstance(value, str) and lenient:
            try:
                number = float(value)
                value = int(number) if number.is_integer() else value
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"must be an integer, not {type(value).__name__}{origin}"
            return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        return value, None
    if spec.type == "number":
        if isinstance(value, str) and lenient:
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"must be a number, not {type(value).__name__}{origin}"
            return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        if not math.isfinite(value):
            msg = f"must be a finite number{origin}"
            return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        return float(value), None
    if spec.type == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        if not isinstance(value, bool):
            msg = f"must be a boolean{origin}"
            return value, ParameterProblem(name, value, msg, "true, false")
        return value, None
    return value, None  # unknown input types pass through


def _bounds(spec: InputSpec, value: Any) -> ParameterProblem | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if spec.min is not None and value < spec.min:
        return ParameterProblem(
            spec.name, value, f"is below the minimum {spec.min}", spec.describe_allowed()
        )
    if spec.max is not None and value > spec.max:
        return ParameterProblem(
            spec.name, value, f"is above the maximum {spec.max}", spec.describe_allowed()
        )
    return None


# --------------------------------------------------------------------------- cross-field rules
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


# --------------------------------------------------------------------------- the parameters
@attrs.frozen
class FineTuneParameters:
    """Merged, validated fine-tuning parameters with the source of each value.

    Build with :meth:`build`; :meth:`as_kwargs` gives what is passed to the component.
    """

    values: Mapping[str, ParameterValue] = attrs.field(repr=False)
    interface_name: str = "chat_completion_pipeline"
    interface_version: str = ""
    dropped: tuple[str, ...] = ()
    """Model-default keys that are not component inputs (not passed on)."""
    warnings: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        user: Mapping[str, Any] | None = None,
        *,
        interface: ComponentInterface | None = None,
        model_defaults: Mapping[str, Any] | None = None,
        reference_defaults: Mapping[str, Any] | None = None,
        passthrough: frozenset[str] | set[str] = frozenset(),
    ) -> FineTuneParameters:
        """Merge and validate; raise :class:`ParameterError` listing every problem.

        ``passthrough`` names live inputs missing from ``interface`` that may be set unchecked
        (new inputs of a newer live component).
        """
        interface = interface or load_pinned_interface()
        reference = REFERENCE_DEFAULTS if reference_defaults is None else reference_defaults
        problems: list[ParameterProblem] = []
        warnings: list[str] = []
        names = list(interface.inputs)
        layers: list[tuple[ParameterSource, Mapping[str, Any]]] = [
            (ParameterSource.REFERENCE_DEFAULT, reference),
            (ParameterSource.MODEL_DEFAULT, model_defaults or {}),
            (ParameterSource.USER, user or {}),
        ]

        merged: dict[str, tuple[Any, ParameterSource]] = {}
        for name, input_spec in interface.inputs.items():
            if (
                input_spec.is_literal
                and input_spec.default is not None
                and name not in JOB_MANAGED_INPUTS
            ):
                merged[name] = (input_spec.default, ParameterSource.COMPONENT_DEFAULT)

        dropped: list[str] = []
        for source, layer in layers:
            for name, value in layer.items():
                if name in interface.inputs or name in passthrough:
                    if (
                        name in JOB_MANAGED_INPUTS
                        and source is not ParameterSource.COMPONENT_DEFAULT
                    ):
                        if source is ParameterSource.USER:
                            problems.append(
                                ParameterProblem(
                                    name, value, "is set by the job", JOB_MANAGED_INPUTS[name]
                                )
                            )
                        continue
                    merged[name] = (value, source)
                elif source is ParameterSource.USER:
                    close = _close(name, names)
                    hint = f"did you mean: {close}" if close else "see the component's inputs"
                    message = f"is not an input of {interface.name} {interface.version}"
                    if name in _MODEL_DEFAULT_ONLY:
                        message += (
                            " (it is a model_specific_defaults hint for tuning ranges, not a "
                            "pipeline input; passing it makes the SDK raise UnexpectedKeywordError)"
                        )
                    problems.append(ParameterProblem(name, value, message, hint))
                else:
                    dropped.append(name)
        if dropped:
            message = (
                f"model_specific_defaults keys that are not inputs of {interface.name} "
                f"{interface.version} were dropped (not passed to the job): {', '.join(dropped)}"
            )
            # Expected for Phi-3 (tuning-range hints); shown in the plan, not on every run's log.
            logger.info("%s", message)
            warnings.append(message)

        values: dict[str, ParameterValue] = {}
        for name, (raw, source) in merged.items():
            spec = interface.inputs.get(name)
            if spec is None:  # a passthrough input of the live component
                values[name] = ParameterValue(name, raw, source, "unknown")
                continue
            value, problem = _coerce(spec, raw, source)
            if problem is None:
                problem = _bounds(spec, value)
            if problem is not None:
                problems.append(problem)
            values[name] = ParameterValue(name, value, source, spec.type)
        for name, spec in interface.inputs.items():
            if not spec.optional and name not in values and name not in JOB_MANAGED_INPUTS:
                problems.append(
                    ParameterProblem(name, None, "is required", spec.describe_allowed())
                )

        plain = {n: v.value for n, v in values.items()}
        for _rule_name, rule in CROSS_FIELD_RULES:
            problems.extend(rule(plain))
        if plain.get("deepspeed") is not None and plain.get("apply_deepspeed") != "true":
            warnings.append(
                "a deepspeed config file is given but apply_deepspeed is not 'true': "
                "the config is ignored"
            )
        if problems:
            raise ParameterError(
                f"{len(problems)} fine-tuning parameter problem(s) for {interface.name} "
                f"{interface.version}:",
                problems=problems,
            )
        return cls(
            values=values,
            interface_name=interface.name,
            interface_version=interface.version,
            dropped=tuple(dropped),
            warnings=tuple(warnings),
        )

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def get(self, name: str, default: Any = None) -> Any:
        item = self.values.get(name)
        return default if item is None or item.value is None else item.value

    def source(self, name: str) -> ParameterSource:
        return self.values[name].source

    def as_kwargs(self, *, include_component_defaults: bool = False) -> dict[str, Any]:
        """The values to pass to the component (component defaults left out unless asked)."""
        return {
            name: item.value
            for name, item in self.values.items()
            if item.value is not None
            and (include_component_defaults or item.source is not ParameterSource.COMPONENT_DEFAULT)
        }

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: item.to_dict() for name, item in sorted(self.values.items())}

    def effective_batch_size(self, gpus_per_node: int, nodes: int = 1) -> int:
        """per_device_train_batch_size x gradient_accumulation_steps x GPUs per node x nodes."""
        return effective_batch_size(
            int(self.get("per_device_train_batch_size", 1)),
            int(self.get("gradient_accumulation_steps", 1)),
            gpus_per_node,
            nodes,
        )

    def display_name(
        self, model_name: str, gpus_per_node: int, nodes: int = 1, *, dataset: str = "ultrachat"
    ) -> str:
        """The reference's pipeline display name (workflow step 9)."""
        return display_name(
            model_name,
            {k: v.value for k, v in self.values.items()},
            gpus_per_node,
            nodes,
            dataset=dataset,
        )


def effective_batch_size(
    per_device_train_batch_size: int,
    gradient_accumulation_steps: int,
    gpus_per_node: int,
    nodes: int,
) -> int:
    """The number of examples per optimizer step over every GPU of every node."""
    return per_device_train_batch_size * gradient_accumulation_steps * gpus_per_node * nodes


def display_name(
    model_name: str,
    parameters: Mapping[str, Any],
    gpus_per_node: int,
    nodes: int = 1,
    *,
    dataset: str = "ultrachat",
) -> str:
    """``{model}-{dataset}-bs{N}-{scheduler}-{ds<stage>|nods}-{lora|nolora}-save_limit{n}-seqlen{n}``.

    Defaults as in the reference: grad_accum 1, scheduler linear, save_limit -1, seqlen -1.
    """

    def get(name: str, default: Any) -> Any:
        value = parameters.get(name)
        return default if value is None else value

    bs = effective_batch_size(
        int(get("per_device_train_batch_size", 1)),
        int(get("gradient_accumulation_steps", 1)),
        gpus_per_node,
        nodes,
    )
    ds = (
        f"ds{get('deepspeed_stage', '2')}"
        if str(get("apply_deepspeed", "false")) == "true"
        else "nods"
    )
    lora = "lora" if str(get("apply_lora", "false")) == "true" else "nolora"
    return (
        f"{model_name}-{dataset}-bs{bs}-{get('lr_scheduler_type', 'linear')}-{ds}-{lora}"
        f"-save_limit{get('save_total_limit', -1)}-seqlen{get('max_seq_length', -1)}"
    )
