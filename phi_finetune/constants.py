"""Every environment variable phi_finetune reads, and the defaults they replace.

Other modules import the names and accessors from here instead of reading ``os.environ``
themselves. Accessors read the environment at call time (not at import), so a variable set
after ``import phi_finetune`` (or by a test) is honoured.

=================================  ==========================================================
Variable                           Meaning
=================================  ==========================================================
``PHI_FINETUNE_STATE_DIR``         Folder of run journals when none is given (default
                                   ``.phi_finetune``); relative to the current folder.
``PHI_FINETUNE_NO_PROGRESS``       Non-empty and not ``0``: no progress bars.
``NO_PROGRESS``                    The same, under the common name.
``PHI_FINETUNE_SERVER_KEY``        The key of a local endpoint server (never logged).
``AZURE_SUBSCRIPTION_ID``          Workspace scope (:class:`~phi_finetune.config.WorkspaceConfig`).
``AZURE_RESOURCE_GROUP``           Workspace scope.
``AZUREML_WORKSPACE_NAME``         Workspace scope.
``MLFLOW_TRACKING_URI``            Default MLflow store of ``phi-finetune serve``.
``HF_HUB_OFFLINE``                 Non-empty and not ``0``: never download from the Hub.
``PHI_FINETUNE_FAKE_AZUREML_URL``  Tests only: send every Azure request to the served
                                   ``FakeAzureML`` at this URL (``fake.serve()``).
=================================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_STATE_DIR",
    "ENV_CACHE_DIR",
    "ENV_FAKE_AZUREML_URL",
    "ENV_HF_HUB_OFFLINE",
    "ENV_MLFLOW_TRACKING_URI",
    "ENV_NO_PROGRESS",
    "ENV_RESOURCE_GROUP",
    "ENV_SERVER_KEY",
    "ENV_SUBSCRIPTION_ID",
    "ENV_WORKSPACE_NAME",
    "NO_PROGRESS_ENVS",
    "STATE_DIR_ENV",
    "WORKSPACE_ENVS",
    "cache_dir",
    "default_state_dir",
    "env_flag",
    "env_value",
    "hf_hub_offline",
    "mlflow_tracking_uri",
    "progress_disabled_by_env",
    "state_dir_from_env",
    "workspace_env",
]

#: The state folder (run journals, the local MLflow store) when nothing else names one.
DEFAULT_STATE_DIR = ".phi_finetune"
#: Environment variable naming the state folder; replaces :data:`DEFAULT_STATE_DIR`.
STATE_DIR_ENV = "PHI_FINETUNE_STATE_DIR"

ENV_NO_PROGRESS = "PHI_FINETUNE_NO_PROGRESS"
#: Variables that switch progress bars off, in the order they are read.
NO_PROGRESS_ENVS: tuple[str, ...] = (ENV_NO_PROGRESS, "NO_PROGRESS")

#: The local endpoint server's key (read once and removed from the environment by the server).
ENV_SERVER_KEY = "PHI_FINETUNE_SERVER_KEY"

ENV_SUBSCRIPTION_ID = "AZURE_SUBSCRIPTION_ID"
ENV_RESOURCE_GROUP = "AZURE_RESOURCE_GROUP"
ENV_WORKSPACE_NAME = "AZUREML_WORKSPACE_NAME"
#: WorkspaceConfig field -> the environment variable that gives it.
WORKSPACE_ENVS: Mapping[str, str] = {
    "subscription_id": ENV_SUBSCRIPTION_ID,
    "resource_group": ENV_RESOURCE_GROUP,
    "workspace_name": ENV_WORKSPACE_NAME,
}

ENV_MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
#: Tests only: the URL of a served ``FakeAzureML``; the credential and transport go there.
ENV_FAKE_AZUREML_URL = "PHI_FINETUNE_FAKE_AZUREML_URL"


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value, ``""`` when it is not set."""
    return (os.environ if environ is None else environ).get(name, "")


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the variable is set to something other than ``""`` or ``"0"``."""
    return env_value(name, environ) not in ("", "0")


def state_dir_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$PHI_FINETUNE_STATE_DIR`` (``~`` expanded), or ``None`` when it is unset or empty."""
    configured = env_value(STATE_DIR_ENV, environ)
    return Path(configured).expanduser() if configured else None


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PHI_FINETUNE_STATE_DIR``, else ``.phi_finetune``: the state folder nothing names."""
    return state_dir_from_env(environ) or Path(DEFAULT_STATE_DIR)


def progress_disabled_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``PHI_FINETUNE_NO_PROGRESS`` or ``NO_PROGRESS`` switches progress bars off."""
    return any(env_flag(name, environ) for name in NO_PROGRESS_ENVS)


def mlflow_tracking_uri(environ: Mapping[str, str] | None = None) -> str | None:
    """``$MLFLOW_TRACKING_URI``, or ``None`` when it is unset or empty."""
    return env_value(ENV_MLFLOW_TRACKING_URI, environ) or None


def hf_hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads from the Hugging Face Hub."""
    return env_flag(ENV_HF_HUB_OFFLINE, environ)


def workspace_env(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """WorkspaceConfig field -> its variable's value (``None``: not set; ``""``: set empty)."""
    env = os.environ if environ is None else environ
    return {field: env.get(var) for field, var in WORKSPACE_ENVS.items()}


#: The library's cache folder (the local backend's cached empty MLflow schema).
ENV_CACHE_DIR = "PHI_FINETUNE_CACHE_DIR"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PHI_FINETUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/phi_finetune``, else
    ``~/.cache/phi_finetune``."""
    configured = env_value(ENV_CACHE_DIR, environ)
    if configured:
        return Path(configured).expanduser()
    base = env_value("XDG_CACHE_HOME", environ)
    return (Path(base) if base else Path.home() / ".cache") / "phi_finetune"
