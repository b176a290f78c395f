"""Step 8-9: the fine-tuning parameters, merged, traced to their source and validated.

Merge order (later wins)::

    component defaults < reference defaults < the model's model_specific_defaults < user values

Every value is checked against the component interface (type, enum, bounds) and against the
cross-field rules the fine-tune code enforces at run time (:data:`CROSS_FIELD_RULES`), so a
mistake fails on the user's machine instead of 20 minutes into a paid job. All problems are
reported together in one :class:`~phi_finetune.errors.ParameterError`.
"""

from __future__ import annotations

import difflib
import enum
import logging
import math
from collections.abc import Mapping
from typing import Any

import attrs

from phi_finetune._parameter_rules import CROSS_FIELD_RULES
from phi_finetune.config.checks import CoercionError, Kind, Mode, coerce
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
    "mlflow_model_path": "set [model] name (a registry model) or [model] mlflow_model_path",
    "pytorch_model_path": "set [model] pytorch_model_path instead",
    "huggingface_id": "set [model] huggingface_id instead",
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
    mode: Mode = "exact" if source is ParameterSource.USER else "text"
    if spec.type == "string":
        if isinstance(value, bool):
            if not spec.is_string_boolean:
                msg = f"must be a string, not a bool{origin}"
                return value, ParameterProblem(name, value, msg, spec.describe_allowed())
            value = "true" if value else "false"
        elif isinstance(value, int) and name in _INT_AS_STRING:
            value = str(value)
        try:
            value = coerce(value, "string", mode=mode)
        except CoercionError:
            msg = f"must be a string, not {type(value).__name__}{origin}"
            return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        if spec.is_string_boolean and value.strip().lower() in ("true", "false"):
            value = value.strip().lower()
        if spec.enum is not None and value not in spec.enum:
            return value, ParameterProblem(
                name, value, f"is not one of the allowed values{origin}", spec.describe_allowed()
            )
        return value, None
    if spec.type in ("integer", "number"):
        kind: Kind = "integer" if spec.type == "integer" else "number"
        try:
            number = coerce(value, kind, mode=mode)
        except CoercionError:
            msg = f"must be {'an integer' if kind == 'integer' else 'a number'}, not "
            msg += f"{type(value).__name__}{origin}"
            return value, ParameterProblem(name, value, msg, spec.describe_allowed())
        if not math.isfinite(number):
            msg = f"must be a finite number{origin}"
            return number, ParameterProblem(name, number, msg, spec.describe_allowed())
        return number, None
    if spec.type == "boolean":
        try:
            return coerce(value, "boolean", mode="text"), None
        except CoercionError:
            return value, ParameterProblem(name, value, f"must be a boolean{origin}", "true, false")
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
        layers: list[tuple[ParameterSource, Mapping[str, Any]]] = [
            (ParameterSource.REFERENCE_DEFAULT, reference),
            (
                ParameterSource.MODEL_DEFAULT,
                _plain_layer("model_defaults", model_defaults, problems),
            ),
            (ParameterSource.USER, _plain_layer("parameters", user, problems)),
        ]
        merged = _component_defaults(interface)
        dropped = _merge_layers(merged, layers, interface, passthrough, problems)
        warnings = [_dropped_message(interface, dropped)] if dropped else []
        values = _checked_values(merged, interface, problems)
        problems.extend(_required_problems(values, interface))
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


# --------------------------------------------------------------------------- build's steps
_Merged = dict[str, tuple[Any, ParameterSource]]
_MAX_DEPTH = 32


def _plain_layer(
    what: str, layer: Mapping[str, Any] | None, problems: list[ParameterProblem]
) -> Mapping[str, Any]:
    """``layer`` with what no input can take reported instead: a non-mapping, a key that is
    not a string, a value nested too deeply to even show in a message."""
    if layer is None:
        return {}
    if not isinstance(layer, Mapping):
        problems.append(
            ParameterProblem(what, type(layer).__name__, "must be a mapping of name to value")
        )
        return {}
    kept: dict[str, Any] = {}
    for name, value in layer.items():
        if not isinstance(name, str):
            problems.append(
                ParameterProblem(str(name), name, "parameter names must be strings", "a name")
            )
        elif _depth(value) > _MAX_DEPTH:
            problems.append(
                ParameterProblem(name, type(value).__name__, "is nested too deeply", "a value")
            )
        else:
            kept[name] = value
    return kept


def _depth(value: Any) -> int:
    """Nesting depth of lists/dicts in ``value``, counted up to ``_MAX_DEPTH + 1``."""
    depth, level = 0, [value]
    while level and depth <= _MAX_DEPTH:
        children: list[Any] = []
        for item in level:
            if isinstance(item, Mapping):
                children.extend(item.values())
            elif isinstance(item, list | tuple):
                children.extend(item)
        if not children:
            return depth
        depth += 1
        level = children
    return depth


def _component_defaults(interface: ComponentInterface) -> _Merged:
    """The component's own literal defaults (job-managed inputs left out)."""
    return {
        name: (spec.default, ParameterSource.COMPONENT_DEFAULT)
        for name, spec in interface.inputs.items()
        if spec.is_literal and spec.default is not None and name not in JOB_MANAGED_INPUTS
    }


def _merge_layers(
    merged: _Merged,
    layers: list[tuple[ParameterSource, Mapping[str, Any]]],
    interface: ComponentInterface,
    passthrough: frozenset[str] | set[str],
    problems: list[ParameterProblem],
) -> list[str]:
    """Lay ``layers`` over ``merged`` (later wins); returns the dropped model-default keys."""
    names = list(interface.inputs)
    dropped: list[str] = []
    for source, layer in layers:
        for name, value in layer.items():
            if name in interface.inputs or name in passthrough:
                if name in JOB_MANAGED_INPUTS:
                    if source is ParameterSource.USER:
                        problems.append(
                            ParameterProblem(
                                name, value, "is set by the job", JOB_MANAGED_INPUTS[name]
                            )
                        )
                    continue
                merged[name] = (value, source)
            elif source is ParameterSource.USER:
                problems.append(_unknown_input(name, value, interface, names))
            else:
                dropped.append(name)
    return dropped


def _unknown_input(
    name: str, value: Any, interface: ComponentInterface, names: list[str]
) -> ParameterProblem:
    close = _close(name, names)
    hint = f"did you mean: {close}" if close else "see the component's inputs"
    message = f"is not an input of {interface.name} {interface.version}"
    if name in _MODEL_DEFAULT_ONLY:
        message += (
            " (it is a model_specific_defaults hint for tuning ranges, not a "
            "pipeline input; passing it makes the SDK raise UnexpectedKeywordError)"
        )
    return ParameterProblem(name, value, message, hint)


def _dropped_message(interface: ComponentInterface, dropped: list[str]) -> str:
    message = (
        f"model_specific_defaults keys that are not inputs of {interface.name} "
        f"{interface.version} were dropped (not passed to the job): {', '.join(dropped)}"
    )
    # Expected for Phi-3 (tuning-range hints); shown in the plan, not on every run's log.
    logger.info("%s", message)
    return message


def _checked_values(
    merged: _Merged, interface: ComponentInterface, problems: list[ParameterProblem]
) -> dict[str, ParameterValue]:
    """Each merged value coerced to its input's type and checked against its bounds."""
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
    return values


def _required_problems(
    values: Mapping[str, ParameterValue], interface: ComponentInterface
) -> list[ParameterProblem]:
    return [
        ParameterProblem(name, None, "is required", spec.describe_allowed())
        for name, spec in interface.inputs.items()
        if not spec.optional and name not in values and name not in JOB_MANAGED_INPUTS
    ]


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
