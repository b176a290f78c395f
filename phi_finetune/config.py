"""Workspace scope and the TOML run configuration (``phi-finetune.toml``).

Two kinds of configuration live here:

* :class:`WorkspaceConfig`: which Azure ML workspace (subscription, resource group, workspace)
  and which registry to use. Built from explicit values, from environment variables, or from a
  ``config.json`` found the way ``MLClient.from_config`` finds it (:meth:`WorkspaceConfig.resolve`
  tries them in that order).
* :class:`RunConfig`: everything a run needs, one frozen attrs object per file section
  (:class:`ModelConfig`, :class:`ComputeConfig`, :class:`DataConfig`, :class:`FinetuneConfig`,
  :class:`DeployConfig`, :class:`ScoreConfig`, :class:`LocalConfig`). Load it from a file with
  :func:`load_run_config`, or build the same objects in Python: every field has a default.

Every value is checked, whichever way it arrives. A file with problems raises one
:class:`~phi_finetune.errors.ConfigurationError` that lists all of them, each naming the file,
the dotted key, what is allowed and, for a misspelt key or value, the closest valid names.
``docs/configuration.md`` is the reference of every key.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from itertools import product
from pathlib import Path, PurePath
from typing import Any, ClassVar, TypeVar

import attrs

from phi_finetune.errors import ConfigurationError, WorkspaceConfigNotFoundError

__all__ = [
    "CONFIG_FILE_DIRECTORIES",
    "CONFIG_FILE_NAMES",
    "CONFIG_SEARCH_LEVELS",
    "DEFAULT_RUN_CONFIG_FILE",
    "ENV_RESOURCE_GROUP",
    "ENV_SUBSCRIPTION_ID",
    "ENV_WORKSPACE_NAME",
    "ComputeConfig",
    "DataConfig",
    "DeployConfig",
    "FinetuneConfig",
    "LocalConfig",
    "ModelConfig",
    "RunConfig",
    "ScoreConfig",
    "WorkspaceConfig",
    "config_file_candidates",
    "find_config_file",
    "load_run_config",
]

logger = logging.getLogger(__name__)

#: The run configuration file name the CLI looks for.
DEFAULT_RUN_CONFIG_FILE = "phi-finetune.toml"

ENV_SUBSCRIPTION_ID = "AZURE_SUBSCRIPTION_ID"
ENV_RESOURCE_GROUP = "AZURE_RESOURCE_GROUP"
ENV_WORKSPACE_NAME = "AZUREML_WORKSPACE_NAME"
_ENV_VARS = {
    "subscription_id": ENV_SUBSCRIPTION_ID,
    "resource_group": ENV_RESOURCE_GROUP,
    "workspace_name": ENV_WORKSPACE_NAME,
}
_SCOPE_FIELDS = ("subscription_id", "resource_group", "workspace_name")

#: Folders searched for a workspace ``config.json``, in ``MLClient.from_config``'s order
#: (``""`` is the folder itself).
CONFIG_FILE_DIRECTORIES: tuple[str, ...] = (".azureml", "aml_config", "")
#: File names searched when no ``file_name`` is given, in ``MLClient.from_config``'s order.
CONFIG_FILE_NAMES: tuple[str, ...] = ("config.json", "project.json")
#: How many parent folders are searched above the start folder (as ``MLClient.from_config``).
CONFIG_SEARCH_LEVELS = 20

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}$")
_WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
_REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,32}$")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_VM_SIZE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")
#: Azure ML's limit for ``request_settings.request_timeout_ms`` on managed online endpoints.
_MAX_REQUEST_TIMEOUT_MS = 180_000

# --------------------------------------------------------------------------------------------
# The checking machinery: every field carries a _Spec in its attrs metadata. The same specs
# check values given in Python (at construction) and values read from a file (before
# construction, so every problem is collected with its file and key).
# --------------------------------------------------------------------------------------------

_SPEC = "phi_finetune.spec"
_Check = Callable[[Any], str | None]


@attrs.frozen
class _Spec:
    types: tuple[type, ...]
    """Accepted Python types (``bool`` never counts as ``int``)."""
    type_name: str
    """The type as a user reads it, e.g. ``integer``."""
    optional: bool = False
    """``None`` is allowed (a file omits the key instead)."""
    choices: tuple[str, ...] = ()
    check: _Check | None = None
    """Returns what is wrong with a value of the right type, or ``None``."""
    allowed: str = ""
    """What is allowed, for messages (``choices`` fill it when empty)."""
    path: str = ""
    """``"path"``: resolved against the file's folder; ``"maybe"``: only when it looks local."""
    section: type | None = None
    """For RunConfig's section fields: the section class."""


def _spec(
    types: tuple[type, ...],
    type_name: str,
    *,
    optional: bool = False,
    choices: Sequence[str] = (),
    check: _Check | None = None,
    allowed: str = "",
    path: str = "",
    section: type | None = None,
) -> dict[str, _Spec]:
    return {
        _SPEC: _Spec(
            types=types,
            type_name=type_name + (" or omitted" if optional else ""),
            optional=optional,
            choices=tuple(choices),
            check=check,
            allowed=allowed or (", ".join(repr(c) for c in choices) if choices else ""),
            path=path,
            section=section,
        )
    }


_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_BOOL = (bool,)
_PATHLIKE = (str, PurePath)
_VERSION = (str, int)


def _int_range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> _Check:
    def check(value: Any) -> str | None:
        if low is not None and (value <= low if low_open else value < low):
            return f"must be {'>' if low_open else '>='} {low}"
        if high is not None and value > high:
            return f"must be <= {high}"
        return None

    return check


def _between(low: float, high: float, *, high_open: bool = False) -> _Check:
    def check(value: Any) -> str | None:
        if not (low < value < high if high_open else low < value <= high):
            return f"must be greater than {low} and {'below' if high_open else 'at most'} {high}"
        return None

    return check


def _non_empty(value: Any) -> str | None:
    if isinstance(value, str) and not value.strip():
        return "must not be empty"
    if isinstance(value, str) and value != value.strip():
        return "has leading or trailing whitespace"
    return None


def _pattern(regex: re.Pattern[str], what: str) -> _Check:
    def check(value: Any) -> str | None:
        problem = _non_empty(value)
        if problem:
            return problem
        return None if regex.match(str(value)) else f"is not a valid {what}"

    return check


def _check_subscription_id(value: Any) -> str | None:
    problem = _non_empty(value)
    if problem:
        return problem
    if _GUID.match(value):
        return None
    hint = " (it looks like a placeholder)" if "<" in value or value.isupper() else ""
    return (
        f"{value!r} is not a subscription id{hint}: it must be a GUID like "
        "'00000000-0000-0000-0000-000000000000'; copy it from the Azure portal "
        "(Subscriptions) or from `az account show --query id -o tsv`"
    )


def _check_resource_group(value: Any) -> str | None:
    problem = _pattern(_RESOURCE_GROUP, "resource group name")(value)
    if problem:
        return problem + " (1-90 letters, digits, '_', '-', '.', '(' or ')')"
    if str(value).endswith("."):
        return "a resource group name cannot end with '.'"
    return None


def _check_host(value: Any) -> str | None:
    if value == "localhost":
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address or 'localhost'"
    if not address.is_loopback:
        return (
            f"{value!r} is not a loopback address: the local endpoint serves an unauthenticated "
            "model and only listens on this machine"
        )
    return None


def _check_alias(value: Any) -> str | None:
    problem = _pattern(_ALIAS, "MLflow alias")(value)
    if problem:
        return problem
    if value == "latest" or re.match(r"^[vV]\d+$", value):
        return "MLflow reserves 'latest' and 'v<number>' aliases"
    return None


def _check_endpoint_name(value: Any) -> str | None:
    problem = _pattern(_ENDPOINT_NAME, "endpoint or deployment name")(value)
    if problem:
        return problem
    if not 3 <= len(value) <= 32:
        return f"must be 3-32 characters long (it has {len(value)})"
    return None


def _to_str_version(value: Any) -> Any:
    # Versions are strings in Azure ML; a bare TOML/Python integer is accepted and converted.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _to_path(value: Any) -> Any:
    return Path(value) if isinstance(value, str | PurePath) else value


def _path_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, PurePath) else value


def _to_optional_path(value: Any) -> Any:
    return None if value is None else _to_path(value)


def _to_params(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _type_ok(value: Any, spec: _Spec) -> bool:
    if value is None:
        return spec.optional
    if isinstance(value, bool):
        return bool in spec.types
    return isinstance(value, spec.types)


@attrs.frozen
class _Problem:
    key: str
    message: str
    allowed: str = ""
    suggestions: tuple[str, ...] = ()

    def render(self) -> str:
        parts = [f"{self.key}: {self.message}"]
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        if self.suggestions:
            parts.append("did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?")
        return "; ".join(parts)


def _close(word: str, candidates: Sequence[str]) -> tuple[str, ...]:
    return tuple(difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6))


def _raise_problems(problems: Sequence[_Problem], *, source: str | None, what: str) -> None:
    if not problems:
        return
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = "\n".join(f"  - {p.render()}" for p in problems)
    if source is not None:
        message = f"{source}: {count} in {what}:\n{lines}"
    else:
        message = f"invalid {what}: {count}:\n{lines}"
    raise ConfigurationError(message, source=source, key=problems[0].key)


def _specs(cls: type) -> dict[str, _Spec]:
    return {f.name: f.metadata[_SPEC] for f in attrs.fields(cls) if _SPEC in f.metadata}


def _value_problems(spec: _Spec, key: str, value: Any) -> list[_Problem]:
    if not _type_ok(value, spec):
        got = "nothing (null)" if value is None else type(value).__name__
        return [_Problem(key, f"expected {spec.type_name}, got {got} {value!r}", spec.allowed)]
    if value is None:
        return []
    if spec.choices and value not in spec.choices:
        return [
            _Problem(
                key,
                f"{value!r} is not allowed",
                spec.allowed,
                _close(str(value), spec.choices),
            )
        ]
    if spec.check is not None:
        message = spec.check(value)
        if message:
            return [_Problem(key, message, spec.allowed)]
    return []


class _Section:
    """Shared behaviour of the configuration sections (a mixin for attrs classes)."""

    _section: ClassVar[str] = ""

    def __attrs_post_init__(self) -> None:
        cls = type(self)
        values = {name: getattr(self, name) for name in _specs(cls)}
        problems = _section_problems(cls, values, prefix=_prefix(cls))
        _raise_problems(problems, source=None, what=cls.__name__)

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems between fields: ``(field, message)`` pairs; values are complete and typed."""
        return []


def _prefix(cls: type) -> str:
    section: str = getattr(cls, "_section", "")
    return f"{section}." if section else ""


def _section_problems(cls: type, values: Mapping[str, Any], *, prefix: str) -> list[_Problem]:
    """Field problems of ``values`` (only the keys given), then cross-field problems."""
    specs = _specs(cls)
    problems: list[_Problem] = []
    for name, value in values.items():
        problems.extend(_value_problems(specs[name], prefix + name, value))
    if problems:
        return problems
    merged = {**_defaults(cls), **values}
    for name, message in cls._cross_check(merged):  # type: ignore[attr-defined]
        problems.append(_Problem(prefix + name, message))
    return problems


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in attrs.fields(cls):
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if default is not attrs.NOTHING:
            out[f.name] = f.converter(default) if callable(f.converter) else default
    return out


# --------------------------------------------------------------------------------------------
# WorkspaceConfig
# --------------------------------------------------------------------------------------------


@attrs.frozen
class WorkspaceConfig(_Section):
    """Which Azure ML workspace and registry to use (no credentials here)."""

    _section: ClassVar[str] = "workspace"

    subscription_id: str = attrs.field(
        metadata=_spec(_STR, "string", check=_check_subscription_id, allowed="a GUID")
    )
    resource_group: str = attrs.field(metadata=_spec(_STR, "string", check=_check_resource_group))
    workspace_name: str = attrs.field(
        metadata=_spec(
            _STR,
            "string",
            check=_pattern(_WORKSPACE_NAME, "workspace name"),
            allowed="3-33 letters, digits, '-' or '_', starting with a letter or digit",
        )
    )
    registry_name: str = attrs.field(
        default="azureml",
        metadata=_spec(_STR, "string", check=_pattern(_REGISTRY_NAME, "registry name")),
    )

    @property
    def scope(self) -> str:
        """The workspace's ARM id (the ``Scope`` form of ``config.json``)."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, registry_name: str = "azureml"
    ) -> WorkspaceConfig:
        """Build from AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME.

        Raises :class:`~phi_finetune.errors.WorkspaceConfigNotFoundError` naming the variables
        that are missing (empty counts as missing), and ConfigurationError for a bad value.
        """
        env = os.environ if environ is None else environ
        found = {f: env.get(var, "") for f, var in _ENV_VARS.items()}
        missing = [_ENV_VARS[f] for f, v in found.items() if not v]
        if missing:
            state = ", ".join(
                f"{var} ({'set' if found[f] else 'not set' if var not in env else 'empty'})"
                for f, var in _ENV_VARS.items()
            )
            raise WorkspaceConfigNotFoundError(
                f"No workspace in the environment: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing. Looked at: {state}. "
                "Set all three variables, or use a config.json (WorkspaceConfig.from_config_file).",
                searched=[f"environment variable {var}" for var in _ENV_VARS.values()],
            )
        return cls._checked(
            {**found, "registry_name": registry_name},
            label=lambda f: _ENV_VARS.get(f, f),
            source="environment",
        )

    @classmethod
    def from_config_file(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        file_name: str | None = None,
        registry_name: str = "azureml",
    ) -> WorkspaceConfig:
        """Read a workspace ``config.json`` found the way ``MLClient.from_config`` finds it.

        ``path`` is the file itself, or the folder to start from (default: the current folder).
        From there ``.azureml/``, ``aml_config/`` and the folder itself are searched for
        ``config.json`` then ``project.json`` (or ``file_name``), walking up to 20 parent folders.
        The file holds ``subscription_id``, ``resource_group`` and ``workspace_name``, or a
        ``Scope`` ARM id. Raises WorkspaceConfigNotFoundError listing every place looked at.
        """
        start = Path.cwd() if path is None else Path(path)
        if start.is_file():
            found: Path | None = start
        elif path is not None and not start.exists():
            raise WorkspaceConfigNotFoundError(
                f"{start}: no such file or folder (given as the workspace config path). "
                "Give the path of config.json or of a folder above it.",
                searched=[str(start)],
            )
        else:
            found = find_config_file(start, file_name=file_name)
        if found is None:
            searched = config_file_candidates(start, file_name=file_name)
            raise WorkspaceConfigNotFoundError(
                "No workspace config file found.\n"
                + _describe_file_search(start, file_name)
                + "\nDownload config.json from the Azure portal (workspace overview > "
                "'Download config.json') into this folder or its .azureml/ folder, or give its "
                "path.",
                searched=[str(p) for p in searched],
            )
        values = _read_config_json(found)
        return cls._checked(
            {**values, "registry_name": registry_name},
            label=lambda f: f"{f} in {found}",
            source=str(found),
        )

    @classmethod
    def resolve(
        cls,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        registry_name: str | None = None,
        path: str | os.PathLike[str] | None = None,
        file_name: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> WorkspaceConfig:
        """Resolve the workspace: explicit values, then environment variables, then config.json.

        Each of the three scope fields is taken from the first place that has it, so explicit
        values override the environment, which overrides the file (as ``MLClient.from_config``
        lets arguments override the file). The file is searched only when something is still
        missing. Raises WorkspaceConfigNotFoundError naming every place looked at.
        """
        env = os.environ if environ is None else environ
        explicit = {
            "subscription_id": subscription_id,
            "resource_group": resource_group,
            "workspace_name": workspace_name,
        }
        values: dict[str, str] = {}
        origin: dict[str, str] = {}
        for field in _SCOPE_FIELDS:
            if explicit[field]:
                values[field], origin[field] = str(explicit[field]), "argument"
            elif env.get(_ENV_VARS[field]):
                values[field], origin[field] = env[_ENV_VARS[field]], _ENV_VARS[field]
        searched = [f"argument {f}" for f in _SCOPE_FIELDS]
        searched += [f"environment variable {v}" for v in _ENV_VARS.values()]
        start = Path.cwd() if path is None else Path(path)
        file_note = ""
        if len(values) < len(_SCOPE_FIELDS):
            found = start if start.is_file() else find_config_file(start, file_name=file_name)
            if found is not None:
                from_file = _read_config_json(found)
                for field in _SCOPE_FIELDS:
                    if field not in values:
                        values[field], origin[field] = from_file[field], str(found)
            else:
                searched += [str(p) for p in config_file_candidates(start, file_name=file_name)]
                file_note = _describe_file_search(start, file_name)
        missing = [f for f in _SCOPE_FIELDS if f not in values]
        if missing:
            given = [f for f in _SCOPE_FIELDS if explicit[f]]
            env_state = ", ".join(
                f"{var} ({'set' if env.get(var) else 'not set'})" for var in _ENV_VARS.values()
            )
            raise WorkspaceConfigNotFoundError(
                f"No Azure ML workspace configuration found (missing: {', '.join(missing)}).\n"
                f"Looked at:\n  - arguments: {', '.join(given) if given else 'none given'}\n"
                f"  - environment: {env_state}\n"
                f"  - {file_note}\n"
                "Fix: pass subscription_id, resource_group and workspace_name; or set "
                f"{', '.join(_ENV_VARS.values())}; or put the workspace's config.json (Azure "
                "portal > workspace overview > 'Download config.json') in this folder or its "
                ".azureml/ folder.",
                searched=searched,
            )
        logger.debug("workspace scope resolved from: %s", origin)
        return cls._checked(
            {**values, "registry_name": registry_name or "azureml"},
            label=lambda f: f"{f} (from {origin.get(f, 'argument')})",
            source=None,
        )

    @classmethod
    def _checked(
        cls, values: Mapping[str, Any], *, label: Callable[[str], str], source: str | None
    ) -> WorkspaceConfig:
        specs = _specs(cls)
        problems: list[_Problem] = []
        for name, value in values.items():
            problems.extend(_value_problems(specs[name], label(name), value))
        _raise_problems(problems, source=source, what="the workspace configuration")
        return cls(**values)


def config_file_candidates(
    path: str | os.PathLike[str] | None = None, *, file_name: str | None = None
) -> list[Path]:
    """Every path ``MLClient.from_config`` would look at, in its order."""
    start = Path.cwd() if path is None else Path(path)
    folders = _search_folders(start)
    names = (file_name,) if file_name else CONFIG_FILE_NAMES
    out: list[Path] = []
    for directory, name in product(CONFIG_FILE_DIRECTORIES, names):
        relative = Path(directory, name) if directory else Path(name)
        out.extend(folder / relative for folder in folders)
    return out


def find_config_file(
    path: str | os.PathLike[str] | None = None, *, file_name: str | None = None
) -> Path | None:
    """The first existing workspace config file in :func:`config_file_candidates` order."""
    for candidate in config_file_candidates(path, file_name=file_name):
        if candidate.is_file():
            logger.debug("found workspace config file %s", candidate)
            return candidate
    return None


def _search_folders(start: Path) -> list[Path]:
    # MLClient walks up with os.path.realpath(parent), at most 20 levels above the start folder.
    folders = [start]
    current = start
    for _ in range(CONFIG_SEARCH_LEVELS):
        parent = Path(os.path.realpath(current / os.pardir))
        if parent == current or str(current) == current.anchor:
            break
        folders.append(parent)
        current = parent
    return folders


def _describe_file_search(start: Path, file_name: str | None) -> str:
    names = (file_name,) if file_name else CONFIG_FILE_NAMES
    relative = [str(Path(d, n)) if d else n for d, n in product(CONFIG_FILE_DIRECTORIES, names)]
    folders = "\n".join(f"      {folder}" for folder in _search_folders(start))
    return (
        f"config files {', '.join(relative)} in each of these folders "
        f"(the MLClient.from_config search):\n{folders}"
    )


def _read_config_json(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"{path}: cannot read the workspace config file ({type(exc).__name__}: {exc})",
            source=str(path),
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}). Download the "
            "workspace's config.json again from the Azure portal.",
            source=str(path),
        ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{path}: a workspace config file must hold a JSON object, not {type(data).__name__}",
            source=str(path),
        )
    scope = data.get("Scope")
    if scope:
        if not isinstance(scope, str):
            raise ConfigurationError(
                f"{path}: Scope must be a string", source=str(path), key="Scope"
            )
        pieces = scope.split("/")
        if (
            len(pieces) < 9
            or pieces[1].lower() != "subscriptions"
            or pieces[3].lower() != "resourcegroups"
            or pieces[7].lower() != "workspaces"
        ):
            raise ConfigurationError(
                f"{path}: Scope {scope!r} is not a workspace ARM id; expected "
                "'/subscriptions/<id>/resourceGroups/<group>/providers/"
                "Microsoft.MachineLearningServices/workspaces/<name>'",
                source=str(path),
                key="Scope",
            )
        return {
            "subscription_id": pieces[2],
            "resource_group": pieces[4],
            "workspace_name": pieces[8],
        }
    missing = [k for k in _SCOPE_FIELDS if k not in data]
    if missing:
        raise ConfigurationError(
            f"{path}: the workspace config file lacks {', '.join(missing)}; it needs "
            "subscription_id, resource_group and workspace_name (or a Scope ARM id)",
            source=str(path),
            key=missing[0],
        )
    wrong = [k for k in _SCOPE_FIELDS if not isinstance(data[k], str)]
    if wrong:
        raise ConfigurationError(
            f"{path}: {', '.join(wrong)} must be strings",
            source=str(path),
            key=wrong[0],
        )
    return {k: data[k] for k in _SCOPE_FIELDS}


# --------------------------------------------------------------------------------------------
# Run configuration sections
# --------------------------------------------------------------------------------------------


def _version_label_problems(
    values: Mapping[str, Any], version_key: str, label_key: str, label_default: str
) -> list[tuple[str, str]]:
    version, label = values[version_key], values[label_key]
    if version is not None and label is not None and label != label_default:
        return [
            (
                label_key,
                f"give either {version_key} ({version!r}) or {label_key} ({label!r}), not both",
            )
        ]
    return []


@attrs.frozen
class ModelConfig(_Section):
    """``[model]``: the foundation model to fine-tune."""

    _section: ClassVar[str] = "model"

    name: str = attrs.field(
        default="Phi-3-mini-4k-instruct", metadata=_spec(_STR, "string", check=_non_empty)
    )
    version: str | None = attrs.field(
        default=None,
        converter=_to_str_version,
        metadata=_spec(_VERSION, "string", optional=True, check=_non_empty),
    )
    label: str | None = attrs.field(
        default="latest", metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    registry: str = attrs.field(
        default="azureml",
        metadata=_spec(_STR, "string", check=_pattern(_REGISTRY_NAME, "registry name")),
    )
    allow_retired: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))

    @property
    def selector(self) -> dict[str, str]:
        """``{"version": ...}`` when a version is pinned, else ``{"label": ...}``."""
        if self.version is not None:
            return {"version": self.version}
        return {"label": self.label or "latest"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.version is not None and self.label == "latest":
            object.__setattr__(self, "label", None)  # a pinned version wins over the default

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _version_label_problems(values, "version", "label", "latest")


@attrs.frozen
class ComputeConfig(_Section):
    """``[compute]``: where the fine-tuning job runs."""

    _section: ClassVar[str] = "compute"

    cluster: str | None = attrs.field(
        default="gpu-cluster",
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_pattern(re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$"), "compute name"),
            allowed="2-32 letters, digits or '-', starting with a letter",
        ),
    )
    serverless: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))
    vm_size: str = attrs.field(
        default="Standard_NC24ads_A100_v4",
        metadata=_spec(_STR, "string", check=_pattern(_VM_SIZE, "VM size")),
    )
    min_instances: int = attrs.field(
        default=0, metadata=_spec(_INT, "integer", check=_int_range(0))
    )
    max_instances: int = attrs.field(
        default=1, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    idle_time_before_scale_down: int = attrs.field(
        default=120, metadata=_spec(_INT, "integer (seconds)", check=_int_range(0))
    )
    tier: str = attrs.field(
        default="dedicated", metadata=_spec(_STR, "string", choices=("dedicated", "low_priority"))
    )
    create_if_missing: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    nodes: int = attrs.field(default=1, metadata=_spec(_INT, "integer", check=_int_range(1)))
    check_quota: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    instance_type_preprocess: str = attrs.field(
        default="Standard_D12_v2",
        metadata=_spec(_STR, "string", check=_pattern(_VM_SIZE, "VM size")),
    )

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if not values["serverless"] and values["cluster"] is None:
            out.append(("cluster", "name a cluster, or set compute.serverless = true"))
        if values["min_instances"] > values["max_instances"]:
            out.append(
                (
                    "min_instances",
                    f"min_instances ({values['min_instances']}) is above max_instances "
                    f"({values['max_instances']})",
                )
            )
        if not values["serverless"] and values["nodes"] > values["max_instances"]:
            out.append(
                (
                    "nodes",
                    f"the job needs {values['nodes']} nodes but the cluster scales to "
                    f"max_instances = {values['max_instances']}; raise max_instances",
                )
            )
        return out


@attrs.frozen
class DataConfig(_Section):
    """``[data]``: the chat data set, how much of it, and where the JSONL files go."""

    _section: ClassVar[str] = "data"

    source: str = attrs.field(
        default="HuggingFaceH4/ultrachat_200k",
        converter=_path_to_str,
        metadata=_spec(
            _STR,
            "string",
            check=_non_empty,
            allowed="a Hugging Face dataset id, or a local file or folder",
            path="maybe",
        ),
    )
    split_pc: float | None = attrs.field(
        default=5.0,
        metadata=_spec(
            _NUM, "number", optional=True, check=_between(0, 100), allowed="0 < pc <= 100"
        ),
    )
    sample: str = attrs.field(
        default="head", metadata=_spec(_STR, "string", choices=("head", "random"))
    )
    seed: int = attrs.field(default=42, metadata=_spec(_INT, "integer"))
    rows: int | None = attrs.field(
        default=None,
        metadata=_spec(_INT, "integer", optional=True, check=_int_range(0, low_open=True)),
    )
    validation_pc: float | None = attrs.field(
        default=None,
        metadata=_spec(
            _NUM,
            "number",
            optional=True,
            check=_between(0, 100, high_open=True),
            allowed="0 < pc < 100",
        ),
    )
    on_invalid: str = attrs.field(
        default="strict",
        metadata=_spec(_STR, "string", choices=("strict", "skip", "report")),
    )
    output_dir: Path = attrs.field(
        default=Path("ultrachat_200k_dataset"),
        converter=_to_path,
        metadata=_spec(_PATHLIKE, "path string", path="path"),
    )
    max_tokens: int | None = attrs.field(
        default=None,
        metadata=_spec(_INT, "integer", optional=True, check=_int_range(0, low_open=True)),
    )


_ParamValue = str | int | float | bool


def _check_parameters(value: Any) -> str | None:
    bad_names = [k for k in value if not isinstance(k, str) or not _IDENTIFIER.match(k)]
    if bad_names:
        return f"{bad_names!r}: parameter names must be pipeline input names (identifiers)"
    bad = {k: v for k, v in value.items() if not isinstance(v, str | int | float | bool)}
    if bad:
        shown = ", ".join(f"{k} ({type(v).__name__})" for k, v in bad.items())
        return f"values must be strings, integers, floats or booleans; not: {shown}"
    return None


@attrs.frozen
class FinetuneConfig(_Section):
    """``[finetune]``: the pipeline component and its inputs."""

    _section: ClassVar[str] = "finetune"

    component: str = attrs.field(
        default="chat_completion_pipeline", metadata=_spec(_STR, "string", check=_non_empty)
    )
    component_version: str | None = attrs.field(
        default=None,
        converter=_to_str_version,
        metadata=_spec(_VERSION, "string", optional=True, check=_non_empty),
    )
    component_label: str | None = attrs.field(
        default="latest", metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    parameters: dict[str, _ParamValue] = attrs.field(
        factory=dict,
        converter=_to_params,
        metadata=_spec(
            (dict,),
            "table",
            check=_check_parameters,
            allowed="pipeline input name = string, integer, float or boolean",
        ),
    )
    interface_file: Path | None = attrs.field(
        default=None,
        converter=_to_optional_path,
        metadata=_spec(_PATHLIKE, "path string", optional=True, path="path"),
    )

    @property
    def selector(self) -> dict[str, str]:
        """``{"version": ...}`` when a component version is pinned, else ``{"label": ...}``."""
        if self.component_version is not None:
            return {"version": self.component_version}
        return {"label": self.component_label or "latest"}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.component_version is not None and self.component_label == "latest":
            object.__setattr__(self, "component_label", None)  # a pinned version wins

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _version_label_problems(values, "component_version", "component_label", "latest")


@attrs.frozen
class DeployConfig(_Section):
    """``[deploy]``: the managed online endpoint and deployment."""

    _section: ClassVar[str] = "deploy"

    enabled: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    instance_type: str = attrs.field(
        default="Standard_NC6s_v3",
        metadata=_spec(_STR, "string", check=_pattern(_VM_SIZE, "VM size")),
    )
    instance_count: int = attrs.field(
        default=1, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    endpoint_name: str | None = attrs.field(
        default=None,
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_check_endpoint_name,
            allowed="3-32 letters, digits or '-', starting with a letter, not ending with '-'",
        ),
    )
    deployment_name: str = attrs.field(
        default="demo",
        metadata=_spec(
            _STR,
            "string",
            check=_check_endpoint_name,
            allowed="3-32 letters, digits or '-', starting with a letter, not ending with '-'",
        ),
    )
    model_name: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    model_version: str | None = attrs.field(
        default=None,
        converter=_to_str_version,
        metadata=_spec(_VERSION, "string", optional=True, check=_non_empty),
    )
    liveness_initial_delay: int = attrs.field(
        default=600, metadata=_spec(_INT, "integer (seconds)", check=_int_range(0))
    )
    request_timeout_ms: int = attrs.field(
        default=90000,
        metadata=_spec(
            _INT,
            "integer (milliseconds)",
            check=_int_range(1, _MAX_REQUEST_TIMEOUT_MS),
            allowed=f"1..{_MAX_REQUEST_TIMEOUT_MS}",
        ),
    )
    keep_endpoint: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))
    wait_timeout_s: float = attrs.field(
        default=3600,
        metadata=_spec(_NUM, "number (seconds)", check=_int_range(0, low_open=True)),
    )


@attrs.frozen
class ScoreConfig(_Section):
    """``[score]``: the test request sent to the deployed model."""

    _section: ClassVar[str] = "score"

    enabled: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    temperature: float = attrs.field(
        default=0.6, metadata=_spec(_NUM, "number", check=_int_range(0))
    )
    top_p: float = attrs.field(
        default=0.9, metadata=_spec(_NUM, "number", check=_between(0, 1), allowed="0 < top_p <= 1")
    )
    do_sample: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    max_new_tokens: int = attrs.field(
        default=200, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    sample_file: Path | None = attrs.field(
        default=None,
        converter=_to_optional_path,
        metadata=_spec(_PATHLIKE, "path string", optional=True, path="path"),
    )

    def parameters(self) -> dict[str, Any]:
        """The ``parameters`` object of a scoring request."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
        }


@attrs.frozen
class LocalConfig(_Section):
    """``[local]``: the offline backend (tiny model training, MLflow registry, HTTP endpoint)."""

    _section: ClassVar[str] = "local"

    base_model: str | None = attrs.field(
        default=None,
        converter=_path_to_str,
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_non_empty,
            allowed="omitted (the built-in tiny test model), a local folder or a hub id",
            path="maybe",
        ),
    )
    device: str = attrs.field(
        default="auto", metadata=_spec(_STR, "string", choices=("auto", "cpu", "cuda"))
    )
    max_steps: int | None = attrs.field(
        default=None, metadata=_spec(_INT, "integer", optional=True, check=_int_range(1))
    )
    port: int = attrs.field(
        default=0,
        metadata=_spec(
            _INT, "integer", check=_int_range(0, 65535), allowed="0 (any free port) .. 65535"
        ),
    )
    host: str = attrs.field(
        default="127.0.0.1",
        metadata=_spec(
            _STR,
            "string",
            check=_check_host,
            allowed="a loopback address: 127.0.0.1, ::1, localhost",
        ),
    )
    mlflow_tracking_uri: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    registered_model_alias: str = attrs.field(
        default="champion",
        metadata=_spec(
            _STR, "string", check=_check_alias, allowed="an MLflow alias such as 'champion'"
        ),
    )


_SECTIONS: dict[str, type] = {
    "workspace": WorkspaceConfig,
    "model": ModelConfig,
    "compute": ComputeConfig,
    "data": DataConfig,
    "finetune": FinetuneConfig,
    "deploy": DeployConfig,
    "score": ScoreConfig,
    "local": LocalConfig,
}

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
        default="local", metadata=_spec(_STR, "string", choices=("azure", "local"))
    )
    state_dir: Path = attrs.field(
        default=Path(".phi_finetune"),
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
        data = self.to_dict()
        lines: list[str] = []
        for key, value in data.items():
            if key not in _SECTIONS and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for name in _SECTIONS:
            table = data.get(name)
            if table is None:
                continue
            lines.append("")
            lines.append(f"[{name}]")
            subtables: dict[str, dict[str, Any]] = {}
            for key, value in table.items():
                if isinstance(value, dict):
                    subtables[key] = value
                elif value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
            for key, sub in subtables.items():
                if not sub:
                    continue
                lines.append("")
                lines.append(f"[{name}.{_toml_key(key)}]")
                lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in sub.items())
        return "\n".join(lines).lstrip("\n") + "\n"

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
        return _build_run_config(
            data, source=source, base_dir=None if base_dir is None else Path(base_dir)
        )


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
    return _build_run_config(data, source=str(file), base_dir=file.resolve().parent)


# --------------------------------------------------------------------------------------------
# Building RunConfig from a dict
# --------------------------------------------------------------------------------------------


def _build_run_config(data: Mapping[str, Any], *, source: str, base_dir: Path | None) -> RunConfig:
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
        if key in _SECTIONS:
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
                built = _build_section(_SECTIONS[key], value, source, base_dir, problems)
                if built is not None:
                    sections[key] = built
        elif key in top_specs:
            top_values[key] = _resolve_path(top_specs[key], value, base_dir)
        else:
            problems.append(_unknown(str(key), "", list(top_specs) + list(_SECTIONS), "top level"))
    top_values.update(_default_paths(RunConfig, top_values, base_dir))
    if base_dir is not None:  # sections left out still get their default paths resolved
        for name, cls in _SECTIONS.items():
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
        for name, cls in _SECTIONS.items()
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


def _section_dict(section: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(section, f.name)) for f in attrs.fields(type(section))}


def _plain(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": "nan", "inf": "inf", "-inf": "-inf"}[repr(value)]
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")
