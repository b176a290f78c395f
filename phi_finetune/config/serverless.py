"""``[serverless]``: what the serverless ("models as a service") backend needs beyond the rest.

The backend fine-tunes with ``azure.ai.ml.finetuning.create_finetuning_job`` and serves the
result from a serverless endpoint; see :mod:`phi_finetune.serverless`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from phi_finetune.config.checks import (
    _BOOL,
    _NUM,
    _STR,
    _int_range,
    _non_empty,
    _pattern,
    _Section,
    _spec,
    _to_params,
)
from phi_finetune.names import endpoint_name_problems

__all__ = ["ServerlessConfig"]

_VM_SIZE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_REGION = re.compile(r"^[a-z][a-z0-9]*$")
#: ``QueueSettings.job_tier`` values of azure-ai-ml (lower case, as the SDK sends them).
JOB_TIERS = ("spot", "basic", "standard", "premium")
WORKSPACE_KINDS = ("project", "hub", "default")


def _check_endpoint(value: Any) -> str | None:
    problem = _non_empty(value)
    if problem:
        return problem
    problems = endpoint_name_problems(value)
    return f"is not a valid endpoint name: {'; '.join(problems)}" if problems else None


def _check_hyperparameters(value: Any) -> str | None:
    bad = {k: v for k, v in value.items() if not isinstance(v, str | int | float | bool)}
    if bad:
        shown = ", ".join(f"{k} ({type(v).__name__})" for k, v in bad.items())
        return f"values must be strings, integers or numbers; not: {shown}"
    return None


def _check_instance_types(value: Any) -> str | None:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return "must be a list of VM size names"
    bad = [v for v in value if not _VM_SIZE.match(v)]
    return f"{bad!r} are not VM size names" if bad else None


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class ServerlessConfig(_Section):
    """``[serverless]``: the serverless backend (``backend = "serverless"``)."""

    _section: ClassVar[str] = "serverless"

    model: str = attrs.field(
        default="Phi-4-mini-instruct", metadata=_spec(_STR, "string", check=_non_empty)
    )
    """The registry model to fine-tune (``[model] registry`` and ``version``/``label`` apply)."""
    hyperparameters: dict[str, Any] = attrs.field(
        factory=dict,
        converter=_to_params,
        metadata=_spec(
            (dict,),
            "table",
            check=_check_hyperparameters,
            allowed="max_seq_length, num_train_epochs, per_device_train_batch_size, learning_rate",
        ),
    )
    output_model_prefix: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    """Name of the model the job registers (default ``<model>-ft-<run id>``)."""
    endpoint_name: str | None = attrs.field(
        default=None,
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_check_endpoint,
            allowed="3-32 letters, digits or '-', starting with a letter",
        ),
    )
    """The serverless endpoint's name (default: derived from the run id)."""
    region: str | None = attrs.field(
        default=None,
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_pattern(_REGION, "Azure region name"),
            allowed="an Azure region name such as 'eastus2'",
        ),
    )
    """The workspace's region for offline plans (a live plan reads it from the workspace)."""
    workspace_kind: str | None = attrs.field(
        default=None,
        metadata=_spec(_STR, "string", optional=True, choices=WORKSPACE_KINDS),
    )
    """The workspace's kind for offline plans (a live plan reads it from the workspace)."""
    check_region: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    """``false``: plan a region the model's list does not name (a warning, not an error)."""
    marketplace_subscription: bool | None = attrs.field(
        default=None, metadata=_spec(_BOOL, "boolean", optional=True)
    )
    """Subscribe to the model's marketplace offer (``None``: only for third-party models)."""
    delete_marketplace_subscription: bool = attrs.field(
        default=False, metadata=_spec(_BOOL, "boolean")
    )
    """Teardown also deletes the marketplace subscription this run created."""
    job_tier: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, choices=JOB_TIERS)
    )
    instance_types: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_tuple,
        metadata=_spec(
            (list, tuple),
            "list of strings",
            check=_check_instance_types,
            allowed="VM sizes: the job runs on managed compute (your quota) instead",
        ),
    )
    compute: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    """A compute cluster: the job runs on it (your quota) instead of serverless capacity."""
    wait_timeout_s: float = attrs.field(
        default=3600,
        metadata=_spec(_NUM, "number (seconds)", check=_int_range(0, low_open=True)),
    )
    """How long deploy waits for the serverless endpoint."""

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        if values.get("compute") and values.get("instance_types"):
            return [("instance_types", "give either compute or instance_types, not both")]
        return []
