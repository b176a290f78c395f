"""Step 6: choose (and if needed create) the fine-tuning compute, with every check before submit.

:class:`ComputeSelector` uses an existing AmlCompute cluster, creates one idempotently, or
selects serverless compute. Before anything is created or submitted it checks: the cluster's
provisioning state, the model's fine-tune allow list (case-insensitive; without a list the
reference's unsupported sizes are refused), the GPUs per node of the size (``list_sizes``, read
around the SDK's camelCase quirk) and the vCPU quota of the size's family and the regional total
(``list_usage``, matched however the service spells the family: see
:mod:`phi_finetune.azure.quota`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.boundary import call, get_or_none
from phi_finetune.azure.quota import (
    DEDICATED,
    LOW_PRIORITY,
    QuotaTable,
    as_int,
    deployment_vcpus,
    entity_field,
)
from phi_finetune.azure.region import cached_sizes, remember_sizes, workspace_location
from phi_finetune.azure.vm_sizes import KNOWN_VM_SIZES, VmSizeInfo, check_not_retired
from phi_finetune.errors import (
    ComputeError,
    ComputeFailedStateError,
    ComputeNotAllowedError,
    ComputeNotFoundError,
)

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Compute

__all__ = [
    "KNOWN_VM_SIZES",
    "SERVERLESS",
    "UNSUPPORTED_WITHOUT_ALLOW_LIST",
    "ComputeSelection",
    "ComputeSelector",
    "VmSizeInfo",
    "check_deployment_quota",
]

logger = logging.getLogger(__name__)

SERVERLESS = "serverless"
#: Sizes the reference refuses when the model has no allow list.
UNSUPPORTED_WITHOUT_ALLOW_LIST = (
    "standard_nc6",
    "standard_nc12",
    "standard_nc24",
    "standard_nc24r",
)
#: The component's default fine-tune instance type (used for serverless without a size).
DEFAULT_SERVERLESS_SIZE = "Standard_NC24ads_A100_v4"
#: Seconds during which :meth:`ComputeSelector.select` acts on the facts of the plan() before it.
PLAN_REUSE_S = 60.0


@attrs.frozen
class ComputeSelection:
    """The compute a job runs on."""

    name: str
    """Cluster name, or ``"serverless"``."""
    vm_size: str
    gpus_per_node: int
    nodes: int = 1
    vcpus_per_node: int | None = None
    family: str | None = None
    created: bool = False
    """Whether this selection created the cluster."""
    cpu_vm_size: str | None = None
    """Serverless only: instance type of the model-import and preprocess steps."""
    will_create: bool = False
    """Set by a plan: the cluster does not exist yet and submit will create it."""
    warnings: tuple[str, ...] = ()

    @property
    def serverless(self) -> bool:
        return self.name == SERVERLESS

    def component_inputs(self) -> dict[str, Any]:
        """The pipeline inputs that place each step (compute, instance types, GPUs, nodes)."""
        inputs: dict[str, Any] = {
            "compute_model_import": self.name,
            "compute_preprocess": self.name,
            "compute_finetune": self.name,
            "compute_model_evaluation": self.name,
            "number_of_gpu_to_use_finetuning": self.gpus_per_node,
        }
        if self.nodes != 1:
            inputs["num_nodes_finetune"] = self.nodes
        if self.serverless:
            inputs["instance_type_finetune"] = self.vm_size
            inputs["instance_type_model_evaluation"] = self.vm_size
            if self.cpu_vm_size:
                inputs["instance_type_model_import"] = self.cpu_vm_size
                inputs["instance_type_preprocess"] = self.cpu_vm_size
        return inputs

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class ComputeSelector:
    """Choose the compute for fine-tuning: an existing or new cluster, or serverless.

    ``ml_client`` is a workspace ``MLClient`` (``None`` only for :meth:`plan_offline`).
    """

    def __init__(
        self,
        ml_client: MLClient | None,
        *,
        cluster: str | None = None,
        serverless: bool = False,
        vm_size: str | None = None,
        nodes: int = 1,
        min_instances: int = 0,
        max_instances: int | None = None,
        idle_time_before_scale_down: int = 120,
        tier: str = "dedicated",
        create_if_missing: bool = True,
        check_quota: bool = True,
        location: str | None = None,
        instance_type_preprocess: str | None = None,
    ) -> None:
        if not serverless and not cluster:
            raise ComputeError(
                "no compute given: set a cluster name (compute.cluster) or serverless = true"
            )
        if nodes < 1:
            raise ComputeError(f"nodes must be >= 1 (got {nodes})")
        self.ml_client = ml_client
        self.cluster = cluster
        self.serverless = serverless
        self.vm_size = vm_size
        self.nodes = nodes
        self.min_instances = min_instances
        self.max_instances = max(max_instances or nodes, nodes)
        self.idle_time_before_scale_down = idle_time_before_scale_down
        self.tier = tier
        self.create_if_missing = create_if_missing
        self.check_quota = check_quota
        self.location = location
        self.instance_type_preprocess = instance_type_preprocess
        self._quota: QuotaTable | None = None
        self._sizes: list[VmSizeInfo] | None = None
        # The last plan() result, its allow list and when it was made: select() right after
        # plan() acts on the facts plan() just read instead of reading them again.
        self._planned: tuple[tuple[str, ...] | None, ComputeSelection, float] | None = None
        self.plan_reuse_s = PLAN_REUSE_S

    @classmethod
    def from_config(cls, ml_client: MLClient | None, section: Any) -> ComputeSelector:
        """From a ``[compute]`` config section (attributes named like the keyword arguments)."""

        def get(name: str, default: Any) -> Any:
            value = getattr(section, name, None)
            return default if value is None else value

        return cls(
            ml_client,
            cluster=get("cluster", None),
            serverless=bool(get("serverless", False)),
            vm_size=get("vm_size", None),
            nodes=int(get("nodes", 1)),
            min_instances=int(get("min_instances", 0)),
            max_instances=get("max_instances", None),
            idle_time_before_scale_down=int(get("idle_time_before_scale_down", 120)),
            tier=str(get("tier", "dedicated")),
            create_if_missing=bool(get("create_if_missing", True)),
            check_quota=bool(get("check_quota", True)),
            instance_type_preprocess=get("instance_type_preprocess", None),
        )

    # ------------------------------------------------------------------ public
    def plan(self, *, allow_list: Sequence[str] | None = None) -> ComputeSelection:
        """Every check, nothing created (``will_create`` tells whether submit would create)."""
        selection = self._select(allow_list, create=False)
        self._planned = (_allow_key(allow_list), selection, time.monotonic())
        return selection

    def select(self, *, allow_list: Sequence[str] | None = None) -> ComputeSelection:
        """Every check, then create the cluster if it is missing (idempotent).

        Right after :meth:`plan` (same allow list, within ``plan_reuse_s`` seconds) the checks
        plan() made stand: the cluster, size list and quota are not read again.
        """
        planned, self._planned = self._planned, None
        if planned is not None:
            key, selection, made = planned
            if key == _allow_key(allow_list) and time.monotonic() - made <= self.plan_reuse_s:
                if not selection.will_create:
                    return selection
                self._create(selection.name, selection.vm_size)
                return attrs.evolve(selection, created=True, will_create=False)
        return self._select(allow_list, create=True)

    def plan_offline(self, *, allow_list: Sequence[str] | None = None) -> ComputeSelection:
        """Checks that need no Azure: allow list and GPUs per node from :data:`KNOWN_VM_SIZES`."""
        name = SERVERLESS if self.serverless else str(self.cluster)
        size = self.vm_size or (DEFAULT_SERVERLESS_SIZE if self.serverless else None)
        if size is None:
            raise ComputeError(
                f"offline plan for cluster {name!r} needs compute.vm_size (the cluster's size "
                "cannot be read without Azure)"
            )
        retired = check_not_retired(size, key="compute.vm_size", what="fine-tune VM size")
        self._check_allowed(size, allow_list)
        info = KNOWN_VM_SIZES.get(size.lower())
        if info is None:
            known = ", ".join(s.name for s in KNOWN_VM_SIZES.values() if s.retirement is None)
            raise ComputeNotAllowedError(
                f"GPUs per node of {size!r} are unknown offline; known sizes: {known}. "
                "Run the plan without --offline to read them from the workspace."
            )
        warning = (
            f"offline: cluster existence, provisioning state and quota of {info.family} "
            "were not checked"
        )
        return ComputeSelection(
            name=name,
            vm_size=info.name,
            gpus_per_node=info.gpus,
            nodes=self.nodes,
            vcpus_per_node=info.vcpus,
            family=info.family,
            cpu_vm_size=self.instance_type_preprocess if self.serverless else None,
            warnings=(*retired, warning),
        )

    def list_sizes(self) -> list[VmSizeInfo]:
        """The workspace region's VM sizes (values read around the camelCase quirk), read once
        per plan."""
        if self._sizes is None:
            self._sizes = self._read_sizes()
        return list(self._sizes)

    def _read_sizes(self) -> list[VmSizeInfo]:
        client = self._client()
        location = self._location()
        raw = call(
            "list the VM sizes of the workspace region",
            lambda: list(client.compute.list_sizes(location=location)),
        )
        sizes = []
        for item in raw:
            name = entity_field(item, "name")
            if not name:
                continue
            sizes.append(
                VmSizeInfo(
                    name=str(name),
                    vcpus=as_int(entity_field(item, "vCPUs", "v_cp_us", "vcpus")) or 0,
                    gpus=as_int(entity_field(item, "gpus", "GPUs")) or 0,
                    family=str(entity_field(item, "family") or ""),
                    memory_gb=float(entity_field(item, "memoryGB", "memory_gb") or 0.0),
                )
            )
        remember_sizes(client, location, sizes)
        return sizes

    def available_vcpus(self, family: str) -> tuple[int, int, int] | None:
        """``(limit, current, limit - current)`` of the strictest quota entry of a VM family in
        ``list_usage``, for the selector's tier (any spelling of the family; ``limit`` -1 and
        available ``sys.maxsize`` when unlimited); ``None`` when the list has no entry for it."""
        entry = self.quota_table().family(family, tier=self._quota_tier())
        if entry is None:
            return None
        if entry.limit is None:
            return -1, entry.current, sys.maxsize
        return entry.limit, entry.current, entry.limit - entry.current

    def quota_table(self) -> QuotaTable:
        """The region's usages (``compute.list_usage``, every page), read once per plan."""
        if self._quota is None:
            self._quota = QuotaTable.read(self._client(), location=self._location())
        return self._quota

    def _location(self) -> str | None:
        if self.location is None:
            self.location = workspace_location(self._client())
        return self.location

    # ------------------------------------------------------------------ internals
    def _client(self) -> MLClient:
        if self.ml_client is None:
            raise ComputeError(
                "this ComputeSelector has no workspace MLClient; pass ml_client=... or use "
                "plan_offline()"
            )
        return self.ml_client

    def _select(self, allow_list: Sequence[str] | None, *, create: bool) -> ComputeSelection:
        # Fresh facts for each plan/select; kept afterwards for the plan's deployment check.
        self._quota, self._sizes = None, None
        warnings: list[str] = []
        existing: Compute | None = None
        if self.serverless:
            name = SERVERLESS
            size = self.vm_size or DEFAULT_SERVERLESS_SIZE
        else:
            name = str(self.cluster)
            client = self._client()
            existing = get_or_none(f"get compute {name!r}", lambda: client.compute.get(name))
            if existing is not None:
                self._check_existing(existing)
                # compute.get returns the Compute subclass of its type: only AmlCompute has
                # size and max_instances (_check_existing refused the other types).
                size = str(getattr(existing, "size", None) or self.vm_size or "")
                if self.vm_size and self.vm_size.lower() != size.lower():
                    warnings.append(
                        f"cluster {name!r} exists with size {size}; compute.vm_size "
                        f"{self.vm_size} is ignored"
                    )
                max_nodes = as_int(getattr(existing, "max_instances", None))
                if max_nodes is not None and max_nodes < self.nodes:
                    raise ComputeError(
                        f"cluster {name!r} scales to {max_nodes} node(s) but the job needs "
                        f"{self.nodes}; raise its max_instances or lower compute.nodes"
                    )
            elif not self.create_if_missing:
                raise ComputeNotFoundError(
                    f"compute cluster {name!r} does not exist in the workspace; create it, "
                    "set compute.create_if_missing = true with compute.vm_size, or use serverless"
                )
            elif not self.vm_size:
                raise ComputeNotFoundError(
                    f"compute cluster {name!r} does not exist and compute.vm_size is not set, so "
                    "it cannot be created; set compute.vm_size (e.g. Standard_NC24ads_A100_v4)"
                )
            else:
                size = self.vm_size

        key = "compute.vm_size" if existing is None else f"the size of cluster {name!r}"
        warnings.extend(check_not_retired(size, key=key, what="fine-tune VM size"))
        self._check_allowed(size, allow_list)
        sizes = self.list_sizes()
        info = next((s for s in sizes if s.name.lower() == size.lower()), None)
        if info is None or info.gpus < 1:
            gpu_sizes = sorted(s.name for s in sizes if s.gpus > 0)
            if allow_list:
                allowed = {a.lower() for a in allow_list}
                gpu_sizes = [s for s in gpu_sizes if s.lower() in allowed] or gpu_sizes
            what = "is not offered" if info is None else "has no GPU"
            raise ComputeNotAllowedError(
                f"VM size {size!r} {what} in the workspace region, so its GPUs per node are "
                f"unknown; available GPU sizes: {', '.join(gpu_sizes) or 'none'}"
            )

        if self.check_quota and not (existing is not None and self._nodes_running(existing)):
            warnings.extend(self._check_quota(info))

        created = False
        will_create = not self.serverless and existing is None
        if will_create and create:
            self._create(name, info.name)
            created, will_create = True, False
        logger.info(
            "compute: %s (%s, %d GPU(s)/node x %d node(s))", name, info.name, info.gpus, self.nodes
        )
        return ComputeSelection(
            name=name,
            vm_size=info.name,
            gpus_per_node=info.gpus,
            nodes=self.nodes,
            vcpus_per_node=info.vcpus,
            family=info.family or None,
            created=created,
            cpu_vm_size=self.instance_type_preprocess if self.serverless else None,
            will_create=will_create,
            warnings=tuple(warnings),
        )

    def _nodes_running(self, existing: Compute) -> bool:
        # A cluster that already runs enough nodes for the job needs no further quota.
        current = as_int(entity_field(existing, "current_node_count", "currentNodeCount"))
        return current is not None and current >= self.nodes

    @staticmethod
    def _check_existing(existing: Compute) -> None:
        state = _text(existing.provisioning_state)
        if state.lower() == "failed":
            errors: Any = existing.provisioning_errors or []
            detail = f": {errors}" if errors else ""
            raise ComputeFailedStateError(
                f"compute cluster {existing.name!r} is in provisioning state 'failed'{detail}; "
                "delete and recreate it, or choose another cluster"
            )
        ctype = str(existing.type or "").lower()
        if ctype and ctype not in ("amlcompute", "aml_compute"):
            raise ComputeError(
                f"compute {existing.name!r} is a {ctype}, not an AmlCompute cluster; fine-tuning "
                "needs a GPU cluster or serverless compute"
            )

    @staticmethod
    def _check_allowed(size: str, allow_list: Sequence[str] | None) -> None:
        if allow_list:
            if size.lower() not in {a.lower() for a in allow_list}:
                raise ComputeNotAllowedError(
                    f"VM size {size!r} is not in the model's fine-tune allow list: "
                    f"{', '.join(allow_list)}; choose one of them (compute.vm_size)"
                )
            return
        if size.lower() in UNSUPPORTED_WITHOUT_ALLOW_LIST:
            raise ComputeNotAllowedError(
                f"VM size {size!r} is not supported for fine-tuning (its GPUs are too old); "
                f"refused sizes: {', '.join(UNSUPPORTED_WITHOUT_ALLOW_LIST)}. Choose e.g. "
                "Standard_NC24ads_A100_v4"
            )

    def _quota_tier(self) -> str:
        return LOW_PRIORITY if self.tier.lower().replace("_", "") == LOW_PRIORITY else DEDICATED

    def _check_quota(self, info: VmSizeInfo) -> list[str]:
        needed = self.nodes * info.vcpus
        if not info.family:
            logger.warning("VM size %s has no family; quota not checked", info.name)
            return [f"VM size {info.name} has no family in the size list; quota not checked"]
        tier = self._quota_tier()
        warnings = self.quota_table().check(
            family=info.family,
            needed=needed,
            tier=tier,
            what=(
                f"the job ({self.nodes} node(s) x {info.vcpus} vCPUs of {info.name}, "
                f"{'low-priority' if tier == LOW_PRIORITY else 'dedicated'})"
            ),
            fix="or lower compute.nodes / choose another size",
        )
        for warning in warnings:
            logger.warning("%s", warning)
        return warnings

    def _create(self, name: str, size: str) -> None:
        from azure.ai.ml.entities import AmlCompute

        cluster = AmlCompute(
            name=name,
            size=size,
            min_instances=self.min_instances,
            max_instances=self.max_instances,
            idle_time_before_scale_down=self.idle_time_before_scale_down,
            tier=self.tier,
        )
        logger.info("creating compute cluster %s (%s, max %d)", name, size, self.max_instances)
        client = self._client()
        result = call(
            f"create compute cluster {name!r}",
            lambda: client.compute.begin_create_or_update(cluster).result(),
        )
        state = _text(result.provisioning_state)
        if state.lower() == "failed":
            raise ComputeFailedStateError(
                f"compute cluster {name!r} was created in state 'failed'; check quota and the "
                "size's availability in the region"
            )


def _allow_key(allow_list: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if allow_list is None else tuple(a.lower() for a in allow_list)


def check_deployment_quota(
    ml_client: MLClient,
    instance_type: str,
    instance_count: int,
    *,
    location: str | None = None,
    selector: ComputeSelector | None = None,
) -> list[str]:
    """Check a managed online deployment's vCPUs (with the upgrade reserve) against the family
    and regional dedicated quota; raise :class:`QuotaExceededError`, return warnings.

    ``selector``: a :class:`ComputeSelector` of the same workspace
    whose size list and usages were already read (saves two requests).
    """
    if selector is None or selector.ml_client is not ml_client:
        selector = ComputeSelector(ml_client, serverless=True, location=location)
        # The size catalogue of the region does not change: reuse the plan's (usages are
        # read again, the job's cluster may have taken quota since).
        cached = cached_sizes(ml_client, selector._location())
        selector._sizes = None if cached is None else list(cached)
    sizes = selector.list_sizes()
    info = next((s for s in sizes if s.name.lower() == instance_type.lower()), None)
    if info is None or not info.family or info.vcpus < 1:
        warning = (
            f"VM size {instance_type!r} is not in the region's size list; the deployment's "
            "quota was not checked"
        )
        logger.warning("%s", warning)
        return [warning]
    needed = deployment_vcpus(info.name, instance_count, info.vcpus)
    reserve = "" if needed == instance_count * info.vcpus else " with the 20% upgrade reserve"
    warnings = selector.quota_table().check(
        family=info.family,
        needed=needed,
        what=(
            f"the online deployment ({instance_count} x {info.name}, {info.vcpus} vCPUs "
            f"each{reserve})"
        ),
        fix="or lower deploy.instance_count / choose another deploy.instance_type",
    )
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def _text(value: Any) -> str:
    """An SDK enum or string as its plain value (``ProvisioningState.FAILED`` -> ``Failed``)."""
    return "" if value is None else str(getattr(value, "value", value))
