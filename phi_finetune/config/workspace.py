"""``WorkspaceConfig``: which Azure ML workspace and registry, and the ``config.json`` search.

:meth:`WorkspaceConfig.resolve` takes each scope field from explicit values, then the
environment (:data:`~phi_finetune.constants.WORKSPACE_ENVS`), then a ``config.json`` found the
way ``MLClient.from_config`` finds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from itertools import product
from pathlib import Path
from typing import Any, ClassVar

import attrs

from phi_finetune.config.checks import (
    _STR,
    _non_empty,
    _pattern,
    _Problem,
    _raise_problems,
    _Section,
    _spec,
    _specs,
    _value_problems,
)
from phi_finetune.constants import (
    ENV_RESOURCE_GROUP,
    ENV_SUBSCRIPTION_ID,
    ENV_WORKSPACE_NAME,
    WORKSPACE_ENVS,
    workspace_env,
)
from phi_finetune.errors import ConfigurationError, WorkspaceConfigNotFoundError
from phi_finetune.names import REGISTRY_NAME_PATTERN, RESOURCE_GROUP_PATTERN, WORKSPACE_NAME_PATTERN

__all__ = [
    "CONFIG_FILE_DIRECTORIES",
    "CONFIG_FILE_NAMES",
    "CONFIG_SEARCH_LEVELS",
    "ENV_RESOURCE_GROUP",
    "ENV_SUBSCRIPTION_ID",
    "ENV_WORKSPACE_NAME",
    "WorkspaceConfig",
    "config_file_candidates",
    "find_config_file",
]

logger = logging.getLogger(__name__)

_ENV_VARS = WORKSPACE_ENVS
_SCOPE_FIELDS = ("subscription_id", "resource_group", "workspace_name")

#: Folders searched for a workspace ``config.json``, in ``MLClient.from_config``'s order
#: (``""`` is the folder itself).
CONFIG_FILE_DIRECTORIES: tuple[str, ...] = (".azureml", "aml_config", "")
#: File names searched when no ``file_name`` is given, in ``MLClient.from_config``'s order.
CONFIG_FILE_NAMES: tuple[str, ...] = ("config.json", "project.json")
#: How many parent folders are searched above the start folder (as ``MLClient.from_config``).
CONFIG_SEARCH_LEVELS = 20

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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
    problem = _pattern(RESOURCE_GROUP_PATTERN, "resource group name")(value)
    if problem:
        return problem + " (1-90 letters, digits, '_', '-', '.', '(' or ')')"
    if str(value).endswith("."):
        return "a resource group name cannot end with '.'"
    return None


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
            check=_pattern(WORKSPACE_NAME_PATTERN, "workspace name"),
            allowed="3-33 letters, digits, '-' or '_', starting with a letter or digit",
        )
    )
    registry_name: str = attrs.field(
        default="azureml",
        metadata=_spec(_STR, "string", check=_pattern(REGISTRY_NAME_PATTERN, "registry name")),
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
        given = workspace_env(environ)
        found = {f: value or "" for f, value in given.items()}
        missing = [_ENV_VARS[f] for f, v in found.items() if not v]
        if missing:
            state = ", ".join(
                f"{var} ({'set' if found[f] else 'not set' if given[f] is None else 'empty'})"
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
        from_env = workspace_env(environ)
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
            elif from_env[field]:
                values[field], origin[field] = str(from_env[field]), _ENV_VARS[field]
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
                f"{var} ({'set' if from_env[f] else 'not set'})" for f, var in _ENV_VARS.items()
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
    except RecursionError:
        raise ConfigurationError(
            f"{path}: not a workspace config file (JSON nested too deeply). Download the "
            "workspace's config.json again from the Azure portal.",
            source=str(path),
        ) from None
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
