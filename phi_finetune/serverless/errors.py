"""The serverless backend's plan errors: one class per check that can fail.

Each message says what is wrong, where (the config key, or the file and line of the data) and
how to fix it; ``key`` is the dotted config key when one applies.
"""

from __future__ import annotations

from phi_finetune.errors import ConfigurationError, DataValidationError, ModelError

__all__ = [
    "NotHubWorkspaceError",
    "ServerlessDataError",
    "ServerlessHyperparameterError",
    "ServerlessNotSupportedError",
    "UnsupportedRegionError",
]


class ServerlessNotSupportedError(ModelError):
    """The model offers no serverless fine-tuning."""


class UnsupportedRegionError(ConfigurationError):
    """The workspace's region is not in the model's serverless region list."""


class NotHubWorkspaceError(ConfigurationError):
    """Serverless fine-tuning needs a hub-based project; the workspace is not one."""


class ServerlessHyperparameterError(ConfigurationError):
    """A hyperparameter the serverless route does not accept, or a value it would reject."""


class ServerlessDataError(DataValidationError):
    """Training or validation data missing or empty."""
