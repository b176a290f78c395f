"""``DeploymentSpec``: every setting of one managed online deployment, in one frozen object.

The defaults are :class:`~phi_finetune.config.DeployConfig`'s (read from its fields, written
nowhere else); :meth:`DeploymentSpec.from_config` builds a spec from a ``[deploy]`` section, and
:meth:`DeploymentSpec.check` does every check that needs no Azure before the first request.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.errors import ComputeNotAllowedError, ConfigurationError
from phi_finetune.names import validate_deployment_name, validate_endpoint_name

if TYPE_CHECKING:
    from phi_finetune.config import DeployConfig

__all__ = [
    "DEFAULT_INSTANCE_TYPE",
    "MAX_REQUEST_TIMEOUT_MS",
    "PROBE_AND_REQUEST_FIELDS",
    "DeploymentSpec",
    "check_instance_type",
    "parse_allow_list",
]

logger = logging.getLogger(__name__)

#: The service's upper bound for ``request_settings.request_timeout_ms``.
MAX_REQUEST_TIMEOUT_MS = 180_000


def _config_default(name: str) -> Any:
    """The default of ``DeployConfig.<name>``: the one place the deploy defaults are written."""
    from phi_finetune.config import DeployConfig

    default: Any = attrs.fields_dict(DeployConfig)[name].default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory()
    return default


#: ``None``: the deployment size follows the model's inference allow list and the quota.
DEFAULT_INSTANCE_TYPE: str | None = _config_default("instance_type")


def parse_allow_list(value: Sequence[str] | str | None) -> list[str] | None:
    """An allow list from a list, a Python/JSON list literal (as in model tags) or a
    comma-separated string; ``None`` when there is none."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ConfigurationError(
                    f"inference allow list {text[:80]!r} is not a list literal; pass a list of "
                    "VM sizes such as ['Standard_NC24ads_A100_v4']",
                    key="inference_allow_list",
                ) from exc
            return [str(item).strip() for item in parsed if str(item).strip()]
        return [item.strip() for item in text.split(",") if item.strip()]
    return [str(item).strip() for item in value if str(item).strip()]


def check_instance_type(instance_type: str, allow_list: Sequence[str] | str | None) -> str:
    """Return ``instance_type`` if the allow list (case-insensitive) permits it, else raise
    :class:`~phi_finetune.errors.ComputeNotAllowedError` listing what is allowed."""
    allowed = parse_allow_list(allow_list)
    if not isinstance(instance_type, str) or not instance_type.strip():
        raise ConfigurationError(
            "instance_type must be a VM size such as 'Standard_NC24ads_A100_v4'",
            key="instance_type",
        )
    if allowed is None:
        logger.info("no inference allow list known; not checking instance type %s", instance_type)
        return instance_type
    if instance_type.lower() not in {item.lower() for item in allowed}:
        listed = ", ".join(allowed) if allowed else "(empty)"
        raise ComputeNotAllowedError(
            f"instance_type={instance_type!r} is not in the model's inference allow list: "
            f"{listed}. Deploy on one of those sizes (instance_type=...)."
        )
    return instance_type


def _allow_list(value: Sequence[str] | str | None) -> tuple[str, ...] | None:
    parsed = parse_allow_list(value)
    return None if parsed is None else tuple(parsed)


def _tags(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in dict(value or {}).items()}


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> None:
    from phi_finetune.config import DeployConfig

    in_config = name in attrs.fields_dict(DeployConfig)
    fix = f"set {name}=" + (f" (deploy.{name} in phi-finetune.toml)" if in_config else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{name} must be an integer, got {value!r}; {fix} to a whole number", key=name
        )
    if value < low or (high is not None and value > high):
        bound = (
            f">= {low}"
            if high is None
            else (f"exactly {low}" if low == high else f"between {low} and {high}")
        )
        raise ConfigurationError(
            f"{name} must be {bound}, got {value}; {fix} to a value {bound}", key=name
        )


#: The probe and request settings beyond ``liveness_initial_delay`` and ``request_timeout_ms``
#: (the fields of :class:`DeploymentSpec` and ``[deploy]`` of the same names).
PROBE_AND_REQUEST_FIELDS = (
    "liveness_period",
    "liveness_timeout",
    "liveness_failure_threshold",
    "liveness_success_threshold",
    "readiness_initial_delay",
    "readiness_period",
    "readiness_timeout",
    "readiness_failure_threshold",
    "readiness_success_threshold",
    "max_concurrent_requests_per_instance",
    "max_queue_wait_ms",
)


@attrs.frozen(kw_only=True)
class DeploymentSpec:
    """What to deploy where: names, instance type and count, probe and timeouts.

    Build it from a ``[deploy]`` section with :meth:`from_config`, or directly (every field has
    :class:`~phi_finetune.config.DeployConfig`'s default). ``attrs.evolve(spec, ...)`` gives a
    changed copy.
    """

    endpoint_name: str | None = attrs.field(factory=lambda: _config_default("endpoint_name"))
    """``None``: a fresh ``ultrachat-completion-<suffix>``."""
    deployment_name: str = attrs.field(factory=lambda: _config_default("deployment_name"))
    instance_type: str | None = attrs.field(factory=lambda: _config_default("instance_type"))
    """``None``: chosen when deploying, from the inference allow list and the quota."""
    instance_count: int = attrs.field(factory=lambda: _config_default("instance_count"))
    liveness_initial_delay: int = attrs.field(
        factory=lambda: _config_default("liveness_initial_delay")
    )
    """Seconds before the liveness probe starts (model loading takes minutes)."""
    request_timeout_ms: int = attrs.field(factory=lambda: _config_default("request_timeout_ms"))
    liveness_period: int = attrs.field(factory=lambda: _config_default("liveness_period"))
    liveness_timeout: int = attrs.field(factory=lambda: _config_default("liveness_timeout"))
    liveness_failure_threshold: int = attrs.field(
        factory=lambda: _config_default("liveness_failure_threshold")
    )
    liveness_success_threshold: int = attrs.field(
        factory=lambda: _config_default("liveness_success_threshold")
    )
    """Must be 1: a liveness probe restarts the container, it never waits for successes."""
    readiness_initial_delay: int = attrs.field(
        factory=lambda: _config_default("readiness_initial_delay")
    )
    readiness_period: int = attrs.field(factory=lambda: _config_default("readiness_period"))
    readiness_timeout: int = attrs.field(factory=lambda: _config_default("readiness_timeout"))
    readiness_failure_threshold: int = attrs.field(
        factory=lambda: _config_default("readiness_failure_threshold")
    )
    readiness_success_threshold: int = attrs.field(
        factory=lambda: _config_default("readiness_success_threshold")
    )
    max_concurrent_requests_per_instance: int = attrs.field(
        factory=lambda: _config_default("max_concurrent_requests_per_instance")
    )
    max_queue_wait_ms: int = attrs.field(factory=lambda: _config_default("max_queue_wait_ms"))
    wait_timeout_s: float | None = None
    """How long deploying may take; ``None``: the deployer's ``wait_timeout_s``."""
    inference_allow_list: tuple[str, ...] | None = attrs.field(default=None, converter=_allow_list)
    """The model's inference VM sizes; ``None``: not checked."""
    keep_on_failure: bool = False
    """Keep the endpoint when the deployment fails (it bills until deleted)."""
    log_lines: int = 50
    """Deployment log lines a :class:`~phi_finetune.errors.DeploymentError` carries."""
    description: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_tags)
    check_quota: bool = True
    """Check the instance type's vCPU quota (with the 20% upgrade reserve) before deploying."""
    allow_retired_size: bool = attrs.field(factory=lambda: _config_default("allow_retired_size"))
    """Plan with a retired ``instance_type`` anyway (a warning instead of an error)."""

    @classmethod
    def from_config(
        cls,
        config: DeployConfig,
        *,
        inference_allow_list: Sequence[str] | str | None = None,
        endpoint_name: str | None = None,
        check_quota: bool = True,
    ) -> DeploymentSpec:
        """From a ``[deploy]`` section; ``endpoint_name`` overrides the section's."""
        return cls(
            endpoint_name=endpoint_name or config.endpoint_name,
            deployment_name=config.deployment_name,
            instance_type=config.instance_type,
            instance_count=config.instance_count,
            liveness_initial_delay=config.liveness_initial_delay,
            request_timeout_ms=config.request_timeout_ms,
            **{name: getattr(config, name) for name in PROBE_AND_REQUEST_FIELDS},
            wait_timeout_s=float(config.wait_timeout_s),
            allow_retired_size=config.allow_retired_size,
            inference_allow_list=_allow_list(inference_allow_list),
            check_quota=check_quota,
        )

    def check(self) -> None:
        """Every offline check: names, instance type against the allow list, integer bounds
        (an instance type of ``None`` is chosen later, from the allow list)."""
        if self.endpoint_name is not None:
            validate_endpoint_name(self.endpoint_name)
        validate_deployment_name(self.deployment_name)
        if self.instance_type is not None:
            check_instance_type(self.instance_type, self.inference_allow_list)
        _check_int("instance_count", self.instance_count, low=1)
        _check_int("liveness_initial_delay", self.liveness_initial_delay, low=0)
        _check_int(
            "request_timeout_ms", self.request_timeout_ms, low=1, high=MAX_REQUEST_TIMEOUT_MS
        )
        for name in PROBE_AND_REQUEST_FIELDS:
            low = 0 if name.endswith(("initial_delay", "queue_wait_ms")) else 1
            high = 1 if name == "liveness_success_threshold" else None
            _check_int(name, getattr(self, name), low=low, high=high)
        _check_int("log_lines", self.log_lines, low=0)
        if self.wait_timeout_s is not None and self.wait_timeout_s <= 0:
            raise ConfigurationError("wait_timeout_s must be > 0", key="wait_timeout_s")

    def to_deployment(self, endpoint_name: str, model: str) -> Any:
        """The SDK's ``ManagedOnlineDeployment`` of ``model`` on ``endpoint_name``: size, count,
        liveness and readiness probes, request settings (``instance_type`` must be chosen)."""
        from azure.ai.ml.entities import (
            ManagedOnlineDeployment,
            OnlineRequestSettings,
            ProbeSettings,
        )

        def probe(kind: str) -> ProbeSettings:
            return ProbeSettings(
                initial_delay=getattr(self, f"{kind}_initial_delay"),
                period=getattr(self, f"{kind}_period"),
                timeout=getattr(self, f"{kind}_timeout"),
                failure_threshold=getattr(self, f"{kind}_failure_threshold"),
                success_threshold=getattr(self, f"{kind}_success_threshold"),
            )

        return ManagedOnlineDeployment(
            name=self.deployment_name,
            endpoint_name=endpoint_name,
            model=model,
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            liveness_probe=probe("liveness"),
            readiness_probe=probe("readiness"),
            request_settings=OnlineRequestSettings(
                request_timeout_ms=self.request_timeout_ms,
                max_concurrent_requests_per_instance=self.max_concurrent_requests_per_instance,
                max_queue_wait_ms=self.max_queue_wait_ms,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["inference_allow_list"] = (
            None if self.inference_allow_list is None else list(self.inference_allow_list)
        )
        data["tags"] = dict(self.tags)
        return data
