"""The typed description of a fine-tuning component's interface (its inputs and outputs).

The project pins its own description of ``chat_completion_pipeline`` 0.0.82 (the component the
reference notebook uses) in ``phi_finetune/interfaces/chat_completion_pipeline_0.0.82.json``:
names, types, defaults, enums, bounds and ``optional`` of every input, and the outputs. It is
what :mod:`phi_finetune.parameters` validates against and what ``plan --offline`` uses.

When the live component is fetched from a registry, :func:`interface_from_component` reads its
``inputs`` (never ``inspect.signature(component)``, which crashes on azure-ai-ml components) and
:func:`compare_interfaces` reports what changed: new inputs pass through, removed or retyped
inputs are reported before anything is submitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.errors import ConfigurationError

__all__ = [
    "LITERAL_TYPES",
    "PATH_TYPES",
    "PINNED_VERSION",
    "ComponentInterface",
    "InputSpec",
    "InterfaceChange",
    "InterfaceReport",
    "OutputSpec",
    "compare_interfaces",
    "interface_from_component",
    "interface_from_dict",
    "interface_from_yaml",
    "load_pinned_interface",
]

#: The version of ``chat_completion_pipeline`` the project's pinned description is written for.
PINNED_VERSION = "0.0.82"
#: Input types whose values are literals (passed as they are).
LITERAL_TYPES = frozenset({"string", "integer", "number", "boolean"})
#: Input types whose values are asset paths (wrapped in ``Input(type=..., path=...)``).
PATH_TYPES = frozenset(
    {"uri_file", "uri_folder", "mlflow_model", "custom_model", "triton_model", "mltable"}
)


def _enum_converter(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(str(v) for v in value)


def _bound_converter(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


@attrs.frozen
class InputSpec:
    """One input of a component: its name, type, default, ``optional``, enum and bounds."""

    name: str
    type: str
    optional: bool = False
    default: Any = None
    enum: tuple[str, ...] | None = attrs.field(default=None, converter=_enum_converter)
    min: float | None = attrs.field(default=None, converter=_bound_converter)
    max: float | None = attrs.field(default=None, converter=_bound_converter)
    mode: str | None = None

    @property
    def is_literal(self) -> bool:
        """Whether values are literals (string, integer, number, boolean)."""
        return self.type in LITERAL_TYPES

    @property
    def is_path(self) -> bool:
        """Whether values are asset paths (uri_file, mlflow_model, ...)."""
        return self.type in PATH_TYPES

    @property
    def is_string_boolean(self) -> bool:
        """A string input whose enum is exactly ``"true"`` / ``"false"``."""
        return (
            self.type == "string" and self.enum is not None and set(self.enum) == {"true", "false"}
        )

    def describe_allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.enum is not None:
            return ", ".join(repr(v) for v in self.enum)
        parts = [self.type]
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "optional": self.optional,
            "default": self.default,
        }
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.mode is not None:
            out["mode"] = self.mode
        return out


@attrs.frozen
class OutputSpec:
    """One output of a component."""

    name: str
    type: str


@attrs.frozen
class ComponentInterface:
    """A component's name, version, inputs and outputs (read-only mappings)."""

    name: str
    version: str
    inputs: Mapping[str, InputSpec] = attrs.field(repr=False)
    outputs: Mapping[str, OutputSpec] = attrs.field(repr=False)
    type: str = "pipeline"
    source: str = ""

    def __contains__(self, name: object) -> bool:
        return name in self.inputs

    def input(self, name: str) -> InputSpec:
        """The input called ``name`` (``KeyError`` when there is none)."""
        return self.inputs[name]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """The description in the pinned JSON layout."""
        return {
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "source": self.source,
            "inputs": {n: s.to_dict() for n, s in self.inputs.items()},
            "outputs": {n: {"type": o.type} for n, o in self.outputs.items()},
        }

    def to_command_component_yaml(self) -> dict[str, Any]:
        """A command-component YAML document with this interface (loads offline).

        Used by ``plan --offline`` to build the pipeline with the real DSL without a registry:
        the pipeline's steps are not needed to check names, values and the job body.
        """
        inputs: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            entry: dict[str, Any] = {"type": spec.type, "optional": spec.optional}
            if spec.default is not None:
                entry["default"] = spec.default
            if spec.enum is not None:
                entry["enum"] = list(spec.enum)
            if spec.min is not None:
                entry["min"] = spec.min
            if spec.max is not None:
                entry["max"] = spec.max
            if spec.mode is not None:
                entry["mode"] = spec.mode
            inputs[name] = entry
        return {
            "$schema": "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json",
            "name": self.name,
            "version": self.version,
            "type": "command",
            "display_name": f"{self.name} (offline interface)",
            "environment": "azureml://registries/azureml/environments/acft-hf-nlp-gpu/versions/112",
            "command": "echo offline interface",
            "inputs": inputs,
            "outputs": {n: {"type": o.type} for n, o in self.outputs.items()},
        }


def _number(value: Any, type_: str) -> Any:
    """Defaults of number/integer inputs as numbers (YAML 1.1 reads ``1e-8`` as a string)."""
    if value is None or isinstance(value, bool):
        return value
    try:
        if type_ == "number":
            number = float(value)
            return number if math.isfinite(number) else value
        if type_ == "integer":
            return int(float(value))
    except (TypeError, ValueError):
        return value
    return value


def interface_from_dict(data: Mapping[str, Any], *, source: str = "") -> ComponentInterface:
    """Build an interface from the pinned JSON layout or a component spec YAML document."""
    try:
        raw_inputs = data.get("inputs") or {}
        inputs: dict[str, InputSpec] = {}
        for name, spec in raw_inputs.items():
            type_ = str(spec.get("type", "string"))
            default = spec.get("default")
            if type_ == "string" and default is not None and not isinstance(default, str):
                default = str(default).lower() if isinstance(default, bool) else str(default)
            inputs[str(name)] = InputSpec(
                name=str(name),
                type=type_,
                optional=bool(spec.get("optional", False)),
                default=_number(default, type_),
                enum=spec.get("enum"),
                min=spec.get("min"),
                max=spec.get("max"),
                mode=spec.get("mode"),
            )
        outputs = {
            str(n): OutputSpec(name=str(n), type=str((o or {}).get("type", "uri_folder")))
            for n, o in (data.get("outputs") or {}).items()
        }
        return ComponentInterface(
            name=str(data["name"]),
            version=str(data.get("version", "")),
            inputs=inputs,
            outputs=outputs,
            type=str(data.get("type", "pipeline")),
            source=source or str(data.get("source", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(
            f"{source or 'component interface'}: not a component interface ({exc}); expected "
            "'name', 'version', 'inputs' (each with 'type') and 'outputs'",
            source=source or None,
        ) from exc


def load_pinned_interface(version: str = PINNED_VERSION) -> ComponentInterface:
    """The project's pinned description of ``chat_completion_pipeline`` (offline, no Azure)."""
    resource = resources.files("phi_finetune").joinpath(
        "interfaces", f"chat_completion_pipeline_{version}.json"
    )
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"no pinned interface for chat_completion_pipeline {version}; pinned: {PINNED_VERSION}"
        ) from exc
    return interface_from_dict(
        json.loads(text), source=f"pinned chat_completion_pipeline {version}"
    )


def interface_from_yaml(path: str | Path) -> ComponentInterface:
    """Read a component spec YAML (or a pinned-layout JSON file) without Azure."""
    import yaml  # type: ignore[import-untyped]

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read component interface file {path}: {exc.strerror or exc}", source=str(path)
        ) from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: not valid YAML/JSON: {exc}", source=str(path)) from exc
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{path}: expected a mapping at the top level", source=str(path))
    return interface_from_dict(data, source=str(path))


def _attr(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, Mapping):
        value = obj.get(name)
    return value


def interface_from_component(component: Any) -> ComponentInterface:
    """Read a live azure-ai-ml component's ``inputs`` and ``outputs`` into an interface."""
    inputs: dict[str, Any] = {}
    for name, item in dict(_attr(component, "inputs") or {}).items():
        inputs[name] = {
            "type": _attr(item, "type") or "string",
            "optional": bool(_attr(item, "optional")),
            "default": _attr(item, "default"),
            "enum": _attr(item, "enum"),
            "min": _attr(item, "min"),
            "max": _attr(item, "max"),
            "mode": _attr(item, "mode"),
        }
    outputs = {
        name: {"type": _attr(item, "type") or "uri_folder"}
        for name, item in dict(_attr(component, "outputs") or {}).items()
    }
    name = str(_attr(component, "name") or "component")
    version = str(_attr(component, "version") or "")
    data = {"name": name, "version": version, "type": _attr(component, "type") or "pipeline"}
    return interface_from_dict(
        {**data, "inputs": inputs, "outputs": outputs}, source=f"live {name} {version}".strip()
    )


@attrs.frozen
class InterfaceChange:
    """One difference between the pinned and the live interface."""

    name: str
    kind: str
    """``added``, ``removed``, ``retyped``, ``enum``, ``bounds``, ``default``, ``required``."""
    pinned: str
    live: str
    breaking: bool

    def __str__(self) -> str:
        if self.kind == "added":
            return f"{self.name}: new input ({self.live}); passed through unchecked"
        if self.kind == "removed":
            return f"{self.name}: input removed from the live component (was {self.pinned})"
        return f"{self.name}: {self.kind} changed from {self.pinned} to {self.live}"


@attrs.frozen
class InterfaceReport:
    """What changed between the pinned and the live interface."""

    pinned_version: str
    live_version: str
    changes: tuple[InterfaceChange, ...] = ()

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.changes if c.kind == "added")

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.changes if c.kind == "removed")

    @property
    def retyped(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.changes if c.kind == "retyped")

    @property
    def breaking(self) -> tuple[InterfaceChange, ...]:
        return tuple(c for c in self.changes if c.breaking)

    @property
    def identical(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        if not self.changes:
            return f"live interface {self.live_version} matches the pinned {self.pinned_version}"
        lines = [
            f"live interface {self.live_version} differs from the pinned {self.pinned_version}:"
        ]
        lines += [f"  - {c}" for c in self.changes]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "none" if value is None else repr(list(value) if isinstance(value, tuple) else value)


def compare_interfaces(pinned: ComponentInterface, live: ComponentInterface) -> InterfaceReport:
    """Compare ``live`` against ``pinned``: added, removed, retyped, enum/bounds/default changes.

    Removed and retyped inputs, narrowed enums and inputs that became required are *breaking*.
    """
    changes: list[InterfaceChange] = []
    for name, old in pinned.inputs.items():
        new = live.inputs.get(name)
        if new is None:
            changes.append(InterfaceChange(name, "removed", old.type, "absent", True))
            continue
        if new.type != old.type:
            changes.append(InterfaceChange(name, "retyped", old.type, new.type, True))
            continue
        if new.enum != old.enum:
            narrowed = old.enum is not None and (
                new.enum is None or not set(old.enum) <= set(new.enum)
            )
            narrowed = narrowed or (old.enum is None and new.enum is not None)
            changes.append(InterfaceChange(name, "enum", _fmt(old.enum), _fmt(new.enum), narrowed))
        if (new.min, new.max) != (old.min, old.max):
            changes.append(
                InterfaceChange(
                    name, "bounds", f"[{old.min}, {old.max}]", f"[{new.min}, {new.max}]", False
                )
            )
        if new.default != old.default and str(new.default) != str(old.default):
            changes.append(
                InterfaceChange(name, "default", _fmt(old.default), _fmt(new.default), False)
            )
        if old.optional and not new.optional:
            changes.append(InterfaceChange(name, "required", "optional", "required", True))
    for name, new in live.inputs.items():
        if name not in pinned.inputs:
            changes.append(InterfaceChange(name, "added", "absent", new.type, False))
    for name, out in pinned.outputs.items():
        if name not in live.outputs:
            changes.append(InterfaceChange(f"outputs.{name}", "removed", out.type, "absent", True))
    return InterfaceReport(pinned.version, live.version, tuple(changes))
