"""The whole run configuration: :class:`RunConfig`, built from a dict shaped like
``phi-finetune.toml`` (every problem collected, with key) and written back as TOML text."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

import attrs

from phi_finetune.config.checks import (
    _PATHLIKE,
    _SPEC,
    _STR,
    _close,
    _defaults,
    _non_empty,
    _Problem,
    _raise_problems,
    _Section,
    _section_problems,
    _Spec,
    _spec,
    _specs,
    _to_path,
)
from phi_finetune.config.sections import (
    SECTIONS,
    ComputeConfig,
    CostConfig,
    DataConfig,
    DeployConfig,
    FinetuneConfig,
    LocalConfig,
    ModelConfig,
    ScoreConfig,
    _default_state_dir,
)
from phi_finetune.config.serverless import ServerlessConfig
from phi_finetune.config.workspace import _SCOPE_FIELDS, WorkspaceConfig
from phi_finetune.errors import ConfigurationError

__all__ = ["RunConfig", "build_run_config", "dumps_run_config"]

_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")

_S = TypeVar("_S")

#: Keys that cannot both be given in one file section.
_EXCLUSIVE: dict[str, tuple[tuple[str, str], ...]] = {
    "model": (("version", "label"),),
    "finetune": (("component_version", "component_label"),),
}


@attrs.frozen
class RunConfig(_Section):
    """Everything a run needs; one attribute per section of ``phi-finetune.toml``."""

    backend: str = attrs.field(
        default="local", metadata=_spec(_STR, "string", choices=("azure", "local", "serverless"))
    )
    state_dir: Path = attrs.field(
        factory=_default_state_dir,
        converter=_to_path,
        metadata=_spec(_PATHLIKE, "path string", path="path"),
    )
    experiment_name: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    workspace: WorkspaceConfig | None = attrs.field(
        default=None,
        metadata=_spec(
            (WorkspaceConfig,), "WorkspaceConfig", optional=True, section=WorkspaceConfig
        ),
    )
    model: ModelConfig = attrs.field(
        factory=ModelConfig, metadata=_spec((ModelConfig,), "ModelConfig", section=ModelConfig)
    )
    compute: ComputeConfig = attrs.field(
        factory=ComputeConfig,
        metadata=_spec((ComputeConfig,), "ComputeConfig", section=ComputeConfig),
    )
    data: DataConfig = attrs.field(
        factory=DataConfig, metadata=_spec((DataConfig,), "DataConfig", section=DataConfig)
    )
    finetune: FinetuneConfig = attrs.field(
        factory=FinetuneConfig,
        metadata=_spec((FinetuneConfig,), "FinetuneConfig", section=FinetuneConfig),
    )
    deploy: DeployConfig = attrs.field(
        factory=DeployConfig, metadata=_spec((DeployConfig,), "DeployConfig", section=DeployConfig)
    )
    score: ScoreConfig = attrs.field(
        factory=ScoreConfig, metadata=_spec((ScoreConfig,), "ScoreConfig", section=ScoreConfig)
    )
    local: LocalConfig = attrs.field(
        factory=LocalConfig, metadata=_spec((LocalConfig,), "LocalConfig", section=LocalConfig)
    )
    cost: CostConfig = attrs.field(
        factory=CostConfig, metadata=_spec((CostConfig,), "CostConfig", section=CostConfig)
    )
    serverless: ServerlessConfig = attrs.field(
        factory=ServerlessConfig,
        metadata=_spec((ServerlessConfig,), "ServerlessConfig", section=ServerlessConfig),
    )

    @property
    def effective_experiment_name(self) -> str:
        """``experiment_name``, or ``chat_completion_<model name>`` when it is not set."""
        return self.experiment_name or f"chat_completion_{self.model.name}"

    @property
    def mlflow_tracking_uri(self) -> str:
        """``local.mlflow_tracking_uri``, or a SQLite store under ``state_dir``."""
        if self.local.mlflow_tracking_uri:
            return self.local.mlflow_tracking_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').absolute().as_posix()}"

    # -- dict / TOML ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-friendly dict (paths as strings, ``None`` kept) that
        :meth:`from_dict` reads back."""
        out: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.metadata[_SPEC].section is not None:
                out[field.name] = None if value is None else _section_dict(value)
            else:
                out[field.name] = _plain(value)
        return out

    def to_toml(self) -> str:
        """This configuration as ``phi-finetune.toml`` text (``None`` values are left out)."""
        return dumps_run_config(self)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "<dict>",
        base_dir: str | os.PathLike[str] | None = None,
    ) -> RunConfig:
        """Build from a dict shaped like the TOML file (as :meth:`to_dict` writes it).

        Every problem is collected and raised together as one ConfigurationError naming
        ``source``. Relative paths resolve against ``base_dir`` when it is given.
        """
        return build_run_config(
            data, source=source, base_dir=None if base_dir is None else Path(base_dir)
        )


def _section_dict(section: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(section, f.name)) for f in attrs.fields(type(section))}


def _plain(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
