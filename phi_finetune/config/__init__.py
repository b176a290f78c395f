"""Workspace scope and the TOML run configuration (``phi-finetune.toml``).

Two kinds of configuration live here:

* :class:`WorkspaceConfig`: which Azure ML workspace (subscription, resource group, workspace)
  and which registry to use. Built from explicit values, from environment variables, or from a
  ``config.json`` found the way ``MLClient.from_config`` finds it (:meth:`WorkspaceConfig.resolve`
  tries them in that order).
* :class:`RunConfig`: everything a run needs, one frozen attrs object per file section
  (:class:`ModelConfig`, :class:`ComputeConfig`, :class:`DataConfig`, :class:`FinetuneConfig`,
  :class:`DeployConfig`, :class:`ScoreConfig`, :class:`LocalConfig`, :class:`CostConfig`).
  Load it from a file with :func:`load_run_config`, or build the same objects in Python: every
  field has a default.

Every value is checked, whichever way it arrives. A file with problems raises one
:class:`~phi_finetune.errors.ConfigurationError` that lists all of them, each naming the file,
the dotted key, what is allowed and, for a misspelt key or value, the closest valid names.
``docs/configuration.md`` is the reference of every key.

The package's modules: :mod:`~phi_finetune.config.checks` (coercion and the field specs, shared
with the fine-tuning parameters), :mod:`~phi_finetune.config.workspace`,
:mod:`~phi_finetune.config.sections` (the seven sections), :mod:`~phi_finetune.config.run`
(:class:`RunConfig`, built from a dict, written as TOML) and :mod:`~phi_finetune.config.toml`
(reading).
"""

from __future__ import annotations

from phi_finetune.config.run import RunConfig
from phi_finetune.config.sections import (
    ComputeConfig,
    CostConfig,
    DataConfig,
    DeployConfig,
    FinetuneConfig,
    LocalConfig,
    ModelConfig,
    ScoreConfig,
)
from phi_finetune.config.toml import DEFAULT_RUN_CONFIG_FILE, load_run_config
from phi_finetune.config.workspace import (
    CONFIG_FILE_DIRECTORIES,
    CONFIG_FILE_NAMES,
    CONFIG_SEARCH_LEVELS,
    ENV_RESOURCE_GROUP,
    ENV_SUBSCRIPTION_ID,
    ENV_WORKSPACE_NAME,
    WorkspaceConfig,
    config_file_candidates,
    find_config_file,
)

__all__ = [
    "CONFIG_FILE_DIRECTORIES",
    "CONFIG_FILE_NAMES",
    "CONFIG_SEARCH_LEVELS",
    "DEFAULT_RUN_CONFIG_FILE",
    "ENV_RESOURCE_GROUP",
    "ENV_SUBSCRIPTION_ID",
    "ENV_WORKSPACE_NAME",
    "ComputeConfig",
    "CostConfig",
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
