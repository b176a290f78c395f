"""The deployment size when ``[deploy] instance_type`` is not set: the model's choice, not ours.

:func:`choose_deployment_size` walks the model's inference allow list in order and takes the
first size that is not retired (:mod:`phi_finetune.azure.vm_sizes`) and, with a workspace, that
the region offers and whose vCPU quota (the 20% upgrade reserve included, see
:func:`~phi_finetune.azure.compute.check_deployment_quota`) covers the deployment. Offline it
takes the first size that is not retired and says quota was not checked. The
:class:`DeploymentSizeChoice` says what was chosen and why; plans show and journal it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.vm_sizes import retirement_of
from phi_finetune.errors import ComputeNotAllowedError, QuotaExceededError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from phi_finetune.azure.compute import ComputeSelector
    from phi_finetune.azure.deployment_spec import DeploymentSpec

__all__ = [
    "FALLBACK_INSTANCE_TYPE",
    "DeploymentSizeChoice",
    "choose_deployment_size",
    "user_deployment_size",
    "warn_if_retired",
    "with_instance_type",
]

logger = logging.getLogger(__name__)

#: The size used when the model has no inference allow list: the NCv3 migration guide's
#: replacement of the retired ``Standard_NC6s_v3`` (the reference notebook's size).
FALLBACK_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"

_WHY = {
    "inference allow list": "first size of the model's inference allow list that is not retired",
    "fallback": (
        f"the model has no inference allow list; {FALLBACK_INSTANCE_TYPE} replaces the retired "
        "Standard_NC6s_v3 (NCv3 migration guide)"
    ),
}


@attrs.frozen
class DeploymentSizeChoice:
    """The online deployment's instance type, where it came from and why."""

    instance_type: str
    instance_count: int
    source: str
    """``user`` (``deploy.instance_type``), ``inference allow list`` or ``fallback`` (the model
    has none: :data:`FALLBACK_INSTANCE_TYPE`)."""
    reason: str
    quota_checked: bool
    skipped: tuple[str, ...] = ()
    """Allow-list sizes passed over, each with why."""
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "source": self.source,
            "reason": self.reason,
            "quota_checked": self.quota_checked,
            "skipped": list(self.skipped),
            "warnings": list(self.warnings),
        }

    def __str__(self) -> str:
        return f"{self.instance_count} x {self.instance_type} ({self.source}: {self.reason})"


def user_deployment_size(
    instance_type: str, instance_count: int, *, quota_checked: bool
) -> DeploymentSizeChoice:
    """The choice when the user set ``deploy.instance_type``."""
    checked = "quota checked" if quota_checked else "quota not checked"
    return DeploymentSizeChoice(
        instance_type, instance_count, "user", f"deploy.instance_type; {checked}", quota_checked
    )


def choose_deployment_size(
    allow_list: Sequence[str] | None,
    *,
    instance_count: int = 1,
    ml_client: MLClient | None = None,
    selector: ComputeSelector | None = None,
    check_quota: bool = True,
    today: datetime.date | None = None,
) -> DeploymentSizeChoice:
    """The first size of ``allow_list`` that is not retired and (with ``ml_client`` and
    ``check_quota``) is offered in the region with enough quota for ``instance_count``.

    Without an allow list :data:`FALLBACK_INSTANCE_TYPE` is the only candidate. Raises
    :class:`~phi_finetune.errors.QuotaExceededError` (or
    :class:`~phi_finetune.errors.ComputeNotAllowedError` when every size is retired) listing
    the allow list and what each size lacked.
    """
    sizes = [s.strip() for s in (allow_list or ()) if s and s.strip()]
    source = "inference allow list"
    if not sizes:
        sizes, source = [FALLBACK_INSTANCE_TYPE], "fallback"
    skipped: list[str] = []
    live: list[str] = []
    for size in sizes:
        retirement = retirement_of(size)
        if retirement is not None and retirement.retired(today):
            skipped.append(f"{size}: retired on {retirement.on.isoformat()}")
        else:
            live.append(size)
    listed = ", ".join(sizes)
    if not live:
        raise ComputeNotAllowedError(
            f"every size of the model's inference allow list ({listed}) is retired; set "
            "deploy.instance_type to a current size, or choose a current model"
        )
    if ml_client is None or not check_quota:
        why = "offline plan" if ml_client is None else "deploy quota check is off"
        return DeploymentSizeChoice(
            live[0],
            instance_count,
            source,
            f"{_WHY[source]}; quota not checked ({why})",
            False,
            tuple(skipped),
        )
    return _first_with_quota(ml_client, selector, live, skipped, listed, instance_count, source)


def _first_with_quota(
    ml_client: MLClient,
    selector: ComputeSelector | None,
    live: list[str],
    skipped: list[str],
    listed: str,
    instance_count: int,
    source: str,
) -> DeploymentSizeChoice:
    from phi_finetune.azure.compute import ComputeSelector, check_deployment_quota

    if selector is None or selector.ml_client is not ml_client:
        selector = ComputeSelector(ml_client, serverless=True)
    offered = {s.name.lower() for s in selector.list_sizes()}
    if not offered:
        warning = "the workspace region's size list is empty: deployment quota not checked"
        logger.warning("%s", warning)
        return DeploymentSizeChoice(
            live[0],
            instance_count,
            source,
            f"{_WHY[source]}; {warning}",
            False,
            tuple(skipped),
            (warning,),
        )
    for size in live:
        if size.lower() not in offered:
            skipped.append(f"{size}: not offered in the workspace region")
            continue
        try:
            warnings = check_deployment_quota(ml_client, size, instance_count, selector=selector)
        except QuotaExceededError as exc:
            skipped.append(
                f"{size}: needs {exc.needed} vCPUs of {exc.family}, the quota leaves "
                f"{exc.available}"
            )
            continue
        return DeploymentSizeChoice(
            size,
            instance_count,
            source,
            f"{_WHY[source]}, offered in the region, with quota (20% upgrade reserve included)",
            True,
            tuple(skipped),
            tuple(warnings),
        )
    found = "; ".join(skipped)
    raise QuotaExceededError(
        f"no size of the model's inference allow list ({listed}) can be deployed "
        f"{instance_count} time(s): {found}. Request quota for one of them in the Azure "
        "portal (Usage + quotas), lower deploy.instance_count, or set deploy.instance_type"
    )


def warn_if_retired(instance_type: str) -> bool:
    """Log a warning when ``instance_type`` is retired; whether it is.

    Plans refuse a retired ``deploy.instance_type``; a direct deploy only warns (the service
    gives the final answer).
    """
    retirement = retirement_of(instance_type)
    if retirement is None or not retirement.retired():
        return False
    logger.warning(
        "instance type %s was retired on %s; Azure no longer provisions it (use %s)",
        instance_type,
        retirement.on.isoformat(),
        " or ".join(retirement.replacements),
    )
    return True


def with_instance_type(
    spec: DeploymentSpec, ml_client: MLClient | None
) -> tuple[DeploymentSpec, bool]:
    """``spec`` with its instance type chosen when it has none (see
    :func:`choose_deployment_size`), and whether that choice already checked the quota."""
    if spec.instance_type is not None:
        warn_if_retired(spec.instance_type)
        return spec, False
    choice = choose_deployment_size(
        spec.inference_allow_list,
        instance_count=spec.instance_count,
        ml_client=ml_client,
        check_quota=spec.check_quota,
    )
    logger.info("deployment size: %s", choice)
    return attrs.evolve(spec, instance_type=choice.instance_type), choice.quota_checked
