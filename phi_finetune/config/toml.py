"""Reading ``phi-finetune.toml`` (every problem collected, with file and key) and writing it.

Reading is :mod:`tomllib`; writing is ``tomli_w``. A file is checked key by key against the
specs of the section classes before anything is built, so one
:class:`~phi_finetune.errors.ConfigurationError` lists every problem: the file, the dotted key,
what is allowed and, for a misspelt key or value, the closest valid names.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from phi_finetune.config.checks import (
    _close,
    _defaults,
    _Problem,
    _raise_problems,
    _section_problems,
    _Spec,
    _specs,
)
from phi_finetune.config.sections import SECTIONS, RunConfig
from phi_finetune.config.workspace import _SCOPE_FIELDS, WorkspaceConfig
from phi_finetune.errors import ConfigurationError

__all__ = ["DEFAULT_RUN_CONFIG_FILE", "build_run_config", "dumps_run_config", "load_run_config"]

#: The run configuration file name the CLI looks for.
DEFAULT_RUN_CONFIG_FILE = "phi-finetune.toml"

_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")

_S = TypeVar("_S")

#: Keys that cannot both be given in one file section.
_EXCLUSIVE: dict[str, tuple[tuple[str, str], ...]] = {
    "model": (("version", "label"),),
    "finetune": (("component_version", "component_label"),),
}


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Load and check ``phi-finetune.toml``; relative paths resolve against its folder."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"{file}: run configuration file not found. Create it (see docs/configuration.md "
            "and examples/phi-finetune.toml) or give another path.",
            source=str(file),
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"{file}: cannot read the run configuration ({type(exc).__name__}: {exc.strerror})",
            source=str(file),
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{file}: not UTF-8 text (byte {exc.start}); save the file as UTF-8",
            source=str(file),
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f"{file}:{match.group(1)}:{match.group(2)}" if match else str(file)
        detail = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        raise ConfigurationError(
            f"{where}: TOML syntax error: {detail}. Fix the file (TOML reference: "
            "https://toml.io/en/v1.0.0).",
            source=str(file),
        ) from exc
    return build_run_config(data, source=str(file), base_dir=file.resolve().parent)


def build_run_config(data: Mapping[str, Any], *, source: str, base_dir: Path | None) -> RunConfig:
    """Check ``data`` (shaped like the file) and build it; every problem raised together."""
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"{source}: the run configuration must be a table/dict, not {type(data).__name__}",
            source=source,
        )
    problems: list[_Problem] = []
    top_specs = {k: v for k, v in _specs(RunConfig).items() if v.section is None}
    top_values: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if value is None:
                if key == "workspace":
                    continue
                problems.append(_Problem(key, f"[{key}] cannot be null; leave the section out"))
            elif not isinstance(value, Mapping):
                problems.append(
                    _Problem(
                        key,
                        f"expected a table [{key}], got {type(value).__name__} {value!r}",
                    )
                )
            else:
                built = _build_section(SECTIONS[key], value, source, base_dir, problems)
                if built is not None:
                    sections[key] = built
        elif key in top_specs:
            top_values[key] = _resolve_path(top_specs[key], value, base_dir)
        else:
            problems.append(_unknown(str(key), "", list(top_specs) + list(SECTIONS), "top level"))
    top_values.update(_default_paths(RunConfig, top_values, base_dir))
    if base_dir is not None:  # sections left out still get their default paths resolved
        for name, cls in SECTIONS.items():
            if name not in data and name != "workspace":
                built = _build_section(cls, {}, source, base_dir, problems)
                if built is not None:
                    sections[name] = built
    problems.extend(_section_problems(RunConfig, top_values, prefix=""))
    _raise_problems(problems, source=source, what="the run configuration")
    return RunConfig(**top_values, **sections)


def _build_section(
    cls: type[_S],
    table: Mapping[str, Any],
    source: str,
    base_dir: Path | None,
    problems: list[_Problem],
) -> _S | None:
    section: str = getattr(cls, "_section")  # noqa: B009
    specs = _specs(cls)
    values: dict[str, Any] = {}
    before = len(problems)
    for key, value in table.items():
        if key in specs:
            values[key] = _resolve_path(specs[key], value, base_dir)
        else:
            problems.append(_unknown(str(key), f"{section}.", list(specs), f"[{section}]"))
    values.update(_default_paths(cls, values, base_dir))
    for first, second in _EXCLUSIVE.get(section, ()):
        if values.get(first) is not None and values.get(second) is not None:
            problems.append(
                _Problem(
                    f"{section}.{second}",
                    f"give either {first} or {second}, not both ({first} pins one exact "
                    f"version; {second} picks the version carrying that label)",
                )
            )
    if cls is WorkspaceConfig:
        for name in _SCOPE_FIELDS:
            if name not in values:
                problems.append(
                    _Problem(f"workspace.{name}", "is required in [workspace]", "a string")
                )
    problems.extend(_section_problems(cls, values, prefix=f"{section}."))
    if len(problems) > before:
        return None
    converted = {k: _convert(cls, k, v) for k, v in values.items()}
    return cls(**converted)


def _default_paths(cls: type, given: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """Defaults of path fields not given, resolved against ``base_dir`` (the file's folder)."""
    if base_dir is None:
        return {}
    defaults = _defaults(cls)
    return {
        name: _resolve_path(spec, str(defaults[name]), base_dir)
        for name, spec in _specs(cls).items()
        if spec.path == "path" and name not in given and defaults.get(name) is not None
    }


def _convert(cls: type, name: str, value: Any) -> Any:
    converter = attrs.fields_dict(cls)[name].converter
    return converter(value) if callable(converter) else value


def _unknown(key: str, prefix: str, known: Sequence[str], where: str) -> _Problem:
    elsewhere = [
        f"{name}.{key}"
        for name, cls in SECTIONS.items()
        if f"{name}." != prefix and key in _specs(cls)
    ]
    if not prefix and key in _specs(RunConfig):
        elsewhere = []
    hint = f" (it belongs in [{elsewhere[0].split('.')[0]}])" if elsewhere else ""
    what = "section or key" if not prefix else "key"
    return _Problem(
        prefix + key,
        f"unknown {what} at {where}{hint}",
        ", ".join(known),
        _close(key, known) or tuple(elsewhere),
    )


def _resolve_path(spec: _Spec, value: Any, base_dir: Path | None) -> Any:
    if base_dir is None or not spec.path or not isinstance(value, str) or not value.strip():
        return value
    expanded = Path(value).expanduser()
    if expanded.is_absolute():
        return str(expanded) if spec.path == "maybe" else expanded
    candidate = Path(os.path.normpath(base_dir / expanded))
    if spec.path == "maybe" and not (
        value.startswith((".", "~")) or value.lower().endswith(_DATA_SUFFIXES) or candidate.exists()
    ):
        return value  # a hub id such as "HuggingFaceH4/ultrachat_200k"
    return str(candidate) if spec.path == "maybe" else candidate


def dumps_run_config(config: RunConfig) -> str:
    """``config`` as TOML text: top-level keys, then one table per section in file order;
    ``None`` values and empty sub-tables are left out (a missing key means its default)."""
    import tomli_w

    data = config.to_dict()
    top = {k: v for k, v in data.items() if k not in SECTIONS and v is not None}
    for name in SECTIONS:
        table = data.get(name)
        if table is not None:
            top[name] = _without_none(table)
    return tomli_w.dumps(top)


def _without_none(table: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            if value:
                out[key] = _without_none(value)
        elif value is not None:
            out[key] = value
    return out
