"""vCPU quota as the service reports it (``compute.list_usage``), matched however it is spelled.

The usages list names a VM family either by its vmSizes key (``standardNCADSA100v4Family``) or by
its display form (``Standard NCADSA100v4 Family Cluster Dedicated vCPUs``), in ``name.value`` or
``name.localizedValue``. It also holds regional totals (``Total Cluster Dedicated Regional
vCPUs``), per-workspace caps and per-cluster usage (types ``.../workspaces/usages`` and
``.../computes/usages``), and ``-1`` for "no limit". :class:`QuotaTable` reads all of that; the
fine-tune compute (:class:`~phi_finetune.azure.compute.ComputeSelector`) and online deployments
(:func:`~phi_finetune.azure.compute.check_deployment_quota`) check a need against it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.boundary import call
from phi_finetune.errors import QuotaExceededError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

__all__ = [
    "DEPLOYMENT_RESERVE_EXEMPT",
    "QuotaEntry",
    "QuotaTable",
    "as_int",
    "deployment_vcpus",
    "entity_field",
    "family_key",
]

logger = logging.getLogger(__name__)

DEDICATED = "dedicated"
LOW_PRIORITY = "lowpriority"

#: VM sizes for which managed online deployments reserve no extra 20% ("Skip 20% Reservation"
#: in the Azure ML docs' "Managed online endpoints SKU list", reference-managed-online-
#: endpoints-vm-sku-list.md in MicrosoftDocs/azure-ai-docs).
DEPLOYMENT_RESERVE_EXEMPT = frozenset(
    {
        "standard_nc24ads_a100_v4",
        "standard_nc48ads_a100_v4",
        "standard_nc96ads_a100_v4",
        "standard_nc40ads_h100_v5",
        "standard_nc80adis_h100_v5",
        "standard_nd96amsr_a100_v4",
        "standard_nd96asr_v4",
        "standard_nd40rs_v2",
        "standard_nd96is_h100_v5",
        "standard_nd96isr_h100_v5",
    }
)

_TAIL = re.compile(r"(vcpus|cores|quota)$|(dedicated|lowpriority)$|cluster$|family$")
_REGIONAL_TOTAL = re.compile(r"^total(cluster)?(dedicated|lowpriority)?regional(vcpus|cores)$")


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def family_key(text: str) -> str:
    """The comparable core of a VM family name in any of the service's spellings.

    ``standardNCADSA100v4Family``, ``Standard NCADSA100v4 Family Cluster Dedicated vCPUs``,
    ``Standard_NCADS_A100_v4_Family`` and ``Standard NCADS_A100_v4 Family vCPUs`` all give
    ``ncadsa100v4``.
    """
    key = _alnum(text)
    while True:
        stripped = _TAIL.sub("", key)
        if stripped == key:
            break
        key = stripped
    return key.removeprefix("standard")


def _tier(text: str) -> str:
    return LOW_PRIORITY if "lowpriority" in _alnum(text) else DEDICATED


def entity_field(obj: Any, *names: str) -> Any:
    """A field of a usage (SDK entity with camelCase ``__dict__`` keys, or a dict)."""
    raw = obj if isinstance(obj, Mapping) else getattr(obj, "__dict__", {})
    for name in names:
        value = raw.get(name) if isinstance(raw, Mapping) else None
        if value is None and not isinstance(obj, Mapping):
            value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def as_int(value: Any) -> int | None:
    try:
        return None if value is None else int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


@attrs.frozen
class QuotaEntry:
    """One usage entry: its names, tier, scope, limit (``None``: unlimited) and current use."""

    names: tuple[str, ...]
    tier: str
    scope: str
    """``region`` (subscription-wide in the region), ``workspace`` or ``compute``."""
    limit: int | None
    current: int
    workspace: str | None = None

    @property
    def label(self) -> str:
        return self.names[0] if self.names else "?"

    @property
    def available(self) -> float:
        """vCPUs left (``math.inf`` when unlimited; never below 0)."""
        return math.inf if self.limit is None else max(self.limit - self.current, 0)

    @classmethod
    def from_usage(cls, usage: Any) -> QuotaEntry:
        name = entity_field(usage, "name")
        names: list[str] = []
        if isinstance(name, Mapping):
            names = [str(name.get(k)) for k in ("value", "localizedValue") if name.get(k)]
        elif name is not None:
            for attr in ("value", "localized_value", "localizedValue"):
                if getattr(name, attr, None):
                    names.append(str(getattr(name, attr)))
            if not names and isinstance(name, str):
                names = [name]
        kind = str(entity_field(usage, "type") or "").lower()
        ident = str(entity_field(usage, "id") or "")
        if "/computes/" in kind or "/computes/" in ident.lower():
            scope = "compute"
        elif "workspace" in kind or "/workspaces/" in ident.lower():
            scope = "workspace"
        else:
            scope = "region"
        match = re.search(r"/workspaces/([^/]+)", ident, flags=re.IGNORECASE)
        limit = as_int(entity_field(usage, "limit"))
        return cls(
            names=tuple(dict.fromkeys(names)),
            tier=_tier(" ".join(names)),
            scope=scope,
            limit=None if limit is None or limit < 0 else limit,
            current=max(as_int(entity_field(usage, "currentValue", "current_value")) or 0, 0),
            workspace=match.group(1) if match else None,
        )

    def is_regional_total(self) -> bool:
        return any(_REGIONAL_TOTAL.match(_alnum(n)) for n in self.names)

    def is_family(self, family: str) -> bool:
        wanted = family_key(family)
        return bool(wanted) and any(family_key(n) == wanted for n in self.names)


@attrs.frozen
class QuotaTable:
    """The usages list of a region, read once; ``workspace`` selects the per-workspace caps."""

    entries: tuple[QuotaEntry, ...]
    workspace: str | None = None

    @classmethod
    def from_usages(cls, usages: Iterable[Any], *, workspace: str | None = None) -> QuotaTable:
        return cls(tuple(QuotaEntry.from_usage(u) for u in usages), workspace)

    @classmethod
    def read(cls, ml_client: MLClient, *, location: str | None = None) -> QuotaTable:
        """``compute.list_usage`` (every page) of the workspace's region."""
        usages = call(
            "read the vCPU quota (list_usage)",
            lambda: list(ml_client.compute.list_usage(location=location)),
        )
        workspace = getattr(ml_client, "workspace_name", None)
        return cls.from_usages(usages, workspace=workspace if isinstance(workspace, str) else None)

    def _applicable(self, entry: QuotaEntry) -> bool:
        if entry.scope == "region":
            return True
        # Caps of other workspaces and per-cluster usage do not limit this workspace.
        return (
            entry.scope == "workspace"
            and self.workspace is not None
            and (entry.workspace or "").lower() == self.workspace.lower()
        )

    def family(self, family: str, *, tier: str = DEDICATED) -> QuotaEntry | None:
        """The strictest applicable entry of ``family`` in ``tier``; ``None`` when absent."""
        found = [
            e
            for e in self.entries
            if e.tier == tier and self._applicable(e) and e.is_family(family)
        ]
        return min(found, key=lambda e: e.available) if found else None

    def regional_total(self, *, tier: str = DEDICATED) -> QuotaEntry | None:
        """The regional vCPU total of ``tier`` (``Total Cluster Dedicated Regional vCPUs``)."""
        found = [
            e
            for e in self.entries
            if e.tier == tier and self._applicable(e) and e.is_regional_total()
        ]
        return min(found, key=lambda e: e.available) if found else None

    def check(
        self, *, family: str, needed: int, what: str, tier: str = DEDICATED, fix: str = ""
    ) -> list[str]:
        """Raise :class:`QuotaExceededError` when ``needed`` vCPUs exceed the family's or the
        regional quota of ``tier``; return warnings (e.g. no entry for the family)."""
        warnings: list[str] = []
        entry = self.family(family, tier=tier)
        if entry is None:
            warnings.append(
                f"no {tier} quota entry for VM family {family!r}; its family quota was not checked"
            )
        for checked in (entry, self.regional_total(tier=tier)):
            if checked is None or needed <= checked.available:
                continue
            available = int(checked.available)
            limit = checked.limit if checked.limit is not None else -1
            raise QuotaExceededError(
                f"{what} needs {needed} vCPUs of {family} but the quota "
                f"{checked.label!r} leaves {available} (limit {limit}, in use "
                f"{checked.current}). Request at least {needed - available} more vCPUs of "
                f"{checked.label!r} in the Azure portal (Usage + quotas) or free capacity"
                + (f"; {fix}" if fix else ""),
                family=family,
                needed=needed,
                available=available,
            )
        return warnings


def deployment_vcpus(instance_type: str, instance_count: int, vcpus_per_instance: int) -> int:
    """vCPUs a managed online deployment needs from the quota, the upgrade reserve included.

    The Azure ML docs ("Manage and increase quotas ... for Azure Machine Learning", section
    "Virtual machine quota allocation for deployment") say: for managed online endpoints
    Azure ML reserves 20% extra for upgrades on some VM SKUs, so the quota must cover
    ``ceil(1.2 * number of instances) * cores of the VM SKU`` (10 x Standard_DS3_v2 with 4
    cores needs 48); the SKUs in :data:`DEPLOYMENT_RESERVE_EXEMPT` need no reserve.
    """
    if instance_type.lower() in DEPLOYMENT_RESERVE_EXEMPT:
        instances = instance_count
    else:
        # Integer arithmetic: ceil(1.2 * n) without floating-point error.
        instances = -(-instance_count * 6 // 5)
    return instances * vcpus_per_instance
