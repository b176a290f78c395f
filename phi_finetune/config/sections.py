"""The run configuration: one frozen attrs class per section of ``phi-finetune.toml``.

:class:`~phi_finetune.config.run.RunConfig` holds :class:`ModelConfig`,
:class:`ComputeConfig`, :class:`DataConfig`, :class:`FinetuneConfig`, :class:`DeployConfig`,
:class:`ScoreConfig`, :class:`LocalConfig` and an optional
:class:`~phi_finetune.config.workspace.WorkspaceConfig`. Every field has a default and
is checked at construction by the specs of :mod:`phi_finetune.config.checks`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from phi_finetune.config.checks import (
    _BOOL,
    _INT,
    _NUM,
    _PATHLIKE,
    _STR,
    _VERSION,
    _between,
    _int_range,
    _non_empty,
    _path_to_str,
    _pattern,
    _Section,
    _spec,
    _to_optional_path,
    _to_params,
    _to_path,
    _to_str_version,
)
from phi_finetune.config.serverless import ServerlessConfig
from phi_finetune.config.workspace import WorkspaceConfig
from phi_finetune.constants import DEFAULT_STATE_DIR, state_dir_from_env
from phi_finetune.names import COMPUTE_NAME_PATTERN, REGISTRY_NAME_PATTERN, endpoint_name_problems

__all__ = [
    "SECTIONS",
    "ComputeConfig",
    "CostConfig",
    "DataConfig",
    "DeployConfig",
    "FinetuneConfig",
    "LocalConfig",
    "ModelConfig",
    "ScoreConfig",
]

_VM_SIZE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: Azure ML's limit for ``request_settings.request_timeout_ms`` on managed online endpoints.
_MAX_REQUEST_TIMEOUT_MS = 180_000
_ENDPOINT_ALLOWED = "3-32 letters, digits or '-', starting with a letter, not ending with '-'"


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
    problem = _non_empty(value)
    if problem:
        return problem
    problems = endpoint_name_problems(value)
    if problems:
        return f"is not a valid endpoint or deployment name: {'; '.join(problems)}"
    return None


def _default_state_dir() -> Path:
    # $PHI_FINETUNE_STATE_DIR replaces the built-in default; made absolute so that it stays
    # relative to the current folder, not to the configuration file's.
    from_env = state_dir_from_env()
    return from_env.absolute() if from_env is not None else Path(DEFAULT_STATE_DIR)


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

    name: str = attrs.field(default="Phi-4", metadata=_spec(_STR, "string", check=_non_empty))
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
        metadata=_spec(_STR, "string", check=_pattern(REGISTRY_NAME_PATTERN, "registry name")),
    )
    allow_retired: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))
    huggingface_id: str | None = attrs.field(
        default=None,
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_pattern(_HF_ID, "Hugging Face model id"),
            allowed="'owner/name' as on huggingface.co",
        ),
    )
    pytorch_model_path: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )
    mlflow_model_path: str | None = attrs.field(
        default=None, metadata=_spec(_STR, "string", optional=True, check=_non_empty)
    )

    @property
    def selector(self) -> dict[str, str]:
        """``{"version": ...}`` when a version is pinned, else ``{"label": ...}``."""
        if self.version is not None:
            return {"version": self.version}
        return {"label": self.label or "latest"}

    @property
    def source(self) -> tuple[str, str]:
        """``(kind, value)``: ``("registry", name)``, ``("huggingface", id)``,
        ``("pytorch", path)`` or ``("mlflow", path)``."""
        for kind, value in (
            ("huggingface", self.huggingface_id),
            ("pytorch", self.pytorch_model_path),
            ("mlflow", self.mlflow_model_path),
        ):
            if value is not None:
                return kind, value
        return "registry", self.name

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.version is not None and self.label == "latest":
            object.__setattr__(self, "label", None)  # a pinned version wins over the default

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        out = _version_label_problems(values, "version", "label", "latest")
        given = [k for k in _MODEL_SOURCES if values.get(k) is not None]
        if len(given) > 1:
            out.append(
                (
                    given[1],
                    f"give exactly one model source; {' and '.join(given)} are both set "
                    "(keep one, or none to fine-tune the registry model [model] name)",
                )
            )
        elif given and values.get("version") is not None:
            out.append(
                (
                    "version",
                    f"version pins a registry model; it does not apply to {given[0]} "
                    "(remove version, or remove " + given[0] + " to use the registry model)",
                )
            )
        return out


#: The ``[model]`` keys that replace the registry model (one at most).
_MODEL_SOURCES = ("huggingface_id", "pytorch_model_path", "mlflow_model_path")


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
            check=_pattern(COMPUTE_NAME_PATTERN, "compute name"),
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
    instance_type: str | None = attrs.field(
        default=None,
        metadata=_spec(_STR, "string", optional=True, check=_pattern(_VM_SIZE, "VM size")),
    )
    """``None``: the first size of the model's inference allow list that is not retired and has
    quota (see :func:`phi_finetune.azure.deploy_size.choose_deployment_size`)."""
    allow_retired_size: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))
    """Plan with a retired ``instance_type`` anyway (a warning instead of an error)."""
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
            allowed=_ENDPOINT_ALLOWED,
        ),
    )
    deployment_name: str = attrs.field(
        default="demo",
        metadata=_spec(
            _STR,
            "string",
            check=_check_endpoint_name,
            allowed=_ENDPOINT_ALLOWED,
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
    # Probe and request settings (see docs/howto/rollout.md for the sources of the defaults):
    # the azureml-examples chat-completion fine-tune notebook deploys with liveness
    # initial_delay 600 and request_timeout_ms 90000; the large-model notebooks give the probes
    # longer timeouts (foundation-models/nvidia-nemo/deploy_infer.ipynb).
    liveness_period: int = attrs.field(
        default=10, metadata=_spec(_INT, "integer (seconds)", check=_int_range(1))
    )
    liveness_timeout: int = attrs.field(
        default=10, metadata=_spec(_INT, "integer (seconds)", check=_int_range(1))
    )
    liveness_failure_threshold: int = attrs.field(
        default=30, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    liveness_success_threshold: int = attrs.field(
        default=1, metadata=_spec(_INT, "integer", check=_int_range(1, 1), allowed="1")
    )
    readiness_initial_delay: int = attrs.field(
        default=600, metadata=_spec(_INT, "integer (seconds)", check=_int_range(0))
    )
    readiness_period: int = attrs.field(
        default=10, metadata=_spec(_INT, "integer (seconds)", check=_int_range(1))
    )
    readiness_timeout: int = attrs.field(
        default=10, metadata=_spec(_INT, "integer (seconds)", check=_int_range(1))
    )
    readiness_failure_threshold: int = attrs.field(
        default=30, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    readiness_success_threshold: int = attrs.field(
        default=1, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    max_concurrent_requests_per_instance: int = attrs.field(
        default=1, metadata=_spec(_INT, "integer", check=_int_range(1))
    )
    max_queue_wait_ms: int = attrs.field(
        default=500, metadata=_spec(_INT, "integer (milliseconds)", check=_int_range(0))
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
    save_steps: int | None = attrs.field(
        default=None, metadata=_spec(_INT, "integer", optional=True, check=_int_range(0))
    )
    gradient_checkpointing: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))
    processes: int = attrs.field(default=1, metadata=_spec(_INT, "integer", check=_int_range(1)))
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
    batch_window_ms: float = attrs.field(
        default=5.0,
        metadata=_spec(
            _NUM, "number", check=_int_range(0, 1000), allowed="0 .. 1000 (milliseconds)"
        ),
    )
    """How long the local endpoint collects concurrent requests into one batch."""
    max_batch_size: int = attrs.field(
        default=32,
        metadata=_spec(_INT, "integer", check=_int_range(1, 256), allowed="1 (no batching) .. 256"),
    )
    """The most conversations the local endpoint generates in one call."""
    prestart_server: bool = attrs.field(default=False, metadata=_spec(_BOOL, "boolean"))
    """Start the local endpoint's process (its imports) while the model trains."""


@attrs.frozen
class CostConfig(_Section):
    """``[cost]``: the plan's cost estimate (prices, region, throughput figure)."""

    _section: ClassVar[str] = "cost"

    enabled: bool = attrs.field(default=True, metadata=_spec(_BOOL, "boolean"))
    region: str | None = attrs.field(
        default=None,
        metadata=_spec(
            _STR,
            "string",
            optional=True,
            check=_pattern(_IDENTIFIER, "Azure region name"),
            allowed="an Azure region name such as 'eastus' (default: the workspace's region)",
        ),
    )
    price_file: Path | None = attrs.field(
        default=None,
        converter=_to_optional_path,
        metadata=_spec(_PATHLIKE, "path string", optional=True, path="path"),
    )
    tokens_per_gpu_second: float | None = attrs.field(
        default=None,
        metadata=_spec(_NUM, "number", optional=True, check=_int_range(0, low_open=True)),
    )
    train_tokens: int | None = attrs.field(
        default=None,
        metadata=_spec(_INT, "integer", optional=True, check=_int_range(0, low_open=True)),
    )
    overhead_hours: float = attrs.field(
        default=0.5, metadata=_spec(_NUM, "number (hours)", check=_int_range(0))
    )


#: Section name -> its class, in file order.
SECTIONS: dict[str, type] = {
    "workspace": WorkspaceConfig,
    "model": ModelConfig,
    "compute": ComputeConfig,
    "data": DataConfig,
    "finetune": FinetuneConfig,
    "deploy": DeployConfig,
    "score": ScoreConfig,
    "local": LocalConfig,
    "cost": CostConfig,
    "serverless": ServerlessConfig,
}
