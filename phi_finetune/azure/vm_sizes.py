"""Pinned facts of the GPU VM sizes the workflow uses, and which sizes Azure has retired.

:data:`KNOWN_VM_SIZES` (GPUs, vCPUs, memory, quota family, GPU type) is used by offline plans and
by the cost estimate; live plans read ``list_sizes``. :data:`RETIRED_SERIES` names the retired
GPU series with their retirement date and replacement; :func:`check_not_retired` turns that into
a plan error (retired: Azure no longer provisions the size) or a warning (announced).

Sources, read 2026-12-01 (learn.microsoft.com pages, from their MicrosoftDocs sources):

- sizes: ``/azure/virtual-machines/sizes/gpu-accelerated/`` ``ncadsh100v5-series``,
  ``ndh100v5-series``, ``ncast4v3-series``, ``nca100v4-series``, ``ndasra100v4-series``,
  ``ndma100v4-series``, ``ndv2-series``, ``ncv3-series``;
- quota family keys (the ``family`` of ``list_sizes``): the vmSizes spelling, as in Azure's size
  list (``standardNCADSA100v4Family``; H100 ``StandardNCadsH100v5Family`` /
  ``standardNDSH100v5Family``; T4 ``Standard NCASv3_T4 Family``);
- retirements: ``/azure/virtual-machines/sizes/retirement/retired-sizes-list`` (ms.date
  2025-06-13: "Series with Retirement Status listed as Retired are no longer available and can't
  be provisioned"), ``/azure/virtual-machines/ncv3-retirement`` and ``ncv3-nc24rs-retirement``
  (NCv3 incl. NC24rs_v3 retired 2025-09-30), ``.../migration-guides/nc-series-retirement``,
  ``ncv2-series-retirement``, ``nd-series-retirement``, ``nv-series-retirement`` (2023-09-06),
  NVv3/NVv4 (announced for 2026-09-30). NDv2 (``Standard_ND40rs_v2``) has no retirement
  announcement on those pages: it is listed as live.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

import attrs

from phi_finetune.errors import ComputeNotAllowedError

__all__ = [
    "KNOWN_VM_SIZES",
    "RETIRED_SERIES",
    "SIZES_SOURCE",
    "Retirement",
    "VmSizeInfo",
    "check_not_retired",
    "known_size",
    "retirement_of",
]

#: Where the pinned size facts come from (see the module docstring for every page).
SIZES_SOURCE = (
    "learn.microsoft.com/azure/virtual-machines/sizes/gpu-accelerated/* (read 2026-12-01)"
)
_RETIRED_LIST = "learn.microsoft.com/azure/virtual-machines/sizes/retirement/retired-sizes-list"


@attrs.frozen
class Retirement:
    """When a VM size series is (or was) retired and what replaces it."""

    on: datetime.date
    replacements: tuple[str, ...]
    series: str
    source: str

    def retired(self, today: datetime.date | None = None) -> bool:
        """Whether the date has come: Azure no longer provisions the size."""
        return (today or datetime.date.today()) >= self.on

    def to_dict(self) -> dict[str, Any]:
        return {
            "on": self.on.isoformat(),
            "replacements": list(self.replacements),
            "series": self.series,
            "source": self.source,
        }


@attrs.frozen
class VmSizeInfo:
    """A VM size: vCPUs, GPUs, family and memory per node (and, when pinned, the GPU type)."""

    name: str
    vcpus: int
    gpus: int
    family: str
    memory_gb: float = 0.0
    gpu_type: str | None = None
    """``A100-80GB``, ``A100-40GB``, ``H100-NVL``, ``H100-80GB``, ``T4``, ``V100``."""
    gpu_memory_gb: float | None = None
    """Memory of one GPU."""

    @property
    def retirement(self) -> Retirement | None:
        return retirement_of(self.name)


def _retirement(series: str, on: str, source: str, *replacements: str) -> Retirement:
    return Retirement(datetime.date.fromisoformat(on), tuple(replacements), series, source)


_NCV3 = "learn.microsoft.com/azure/virtual-machines/ncv3-retirement"
_NC24RS = "learn.microsoft.com/azure/virtual-machines/ncv3-nc24rs-retirement"
_GUIDES = "learn.microsoft.com/azure/virtual-machines/sizes/migration-guides/"
_A100_NC = ("Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4")

#: Retired (or announced) GPU series: a pattern of the size name (without ``Standard_``, lower
#: case) and its retirement. Replacements: the migration guide's table where it has one.
RETIRED_SERIES: tuple[tuple[re.Pattern[str], Retirement], ...] = (
    (
        re.compile(r"^nc6s_v3$"),
        _retirement("NCv3", "2025-09-30", _NCV3, "Standard_NC24ads_A100_v4"),
    ),
    (
        re.compile(r"^nc12s_v3$"),
        _retirement("NCv3", "2025-09-30", _NCV3, "Standard_NC48ads_A100_v4"),
    ),
    (
        re.compile(r"^nc24s_v3$"),
        _retirement("NCv3", "2025-09-30", _NCV3, "Standard_NC96ads_A100_v4"),
    ),
    (
        re.compile(r"^nc24rs_v3$"),
        _retirement("NCv3 NC24rs", "2025-09-30", _NC24RS, "Standard_NC40ads_H100_v5"),
    ),
    (
        re.compile(r"^nc(6|12|24|24r)(_promo)?$"),
        _retirement("NC (K80)", "2023-09-06", _GUIDES + "nc-series-retirement", *_A100_NC),
    ),
    (
        re.compile(r"^nc(6|12|24|24r)s_v2$"),
        _retirement("NCv2 (P100)", "2023-09-06", _GUIDES + "ncv2-series-retirement", *_A100_NC),
    ),
    (
        re.compile(r"^nd(6|12|24|24r)s$"),
        _retirement("ND (P40)", "2023-09-06", _GUIDES + "nd-series-retirement", *_A100_NC),
    ),
    (
        re.compile(r"^nv(6|12|24)(_promo)?$"),
        _retirement(
            "NV (M60)", "2023-09-06", _GUIDES + "nv-series-retirement", "Standard_NV12ads_A10_v5"
        ),
    ),
    (
        re.compile(r"^nv(12|24|48)s_v3$"),
        _retirement("NVv3", "2026-09-30", _RETIRED_LIST, "Standard_NV12ads_A10_v5"),
    ),
    (
        re.compile(r"^nv(4|8|16|32)as_v4$"),
        _retirement("NVv4", "2026-09-30", _RETIRED_LIST, "Standard_NV12ads_A10_v5"),
    ),
)


def retirement_of(size: str) -> Retirement | None:
    """The retirement of a VM size's series (case-insensitive), ``None`` when none is known."""
    key = size.strip().lower().removeprefix("standard_")
    return next((r for pattern, r in RETIRED_SERIES if pattern.match(key)), None)


def check_not_retired(
    size: str,
    *,
    key: str,
    what: str,
    today: datetime.date | None = None,
    allow: str | None = None,
) -> list[str]:
    """Raise :class:`ComputeNotAllowedError` when ``size`` is retired (Azure no longer
    provisions it); a warning when its retirement is announced; ``[]`` otherwise.

    ``key`` is the setting that chose the size (``compute.vm_size``), ``what`` what it is for;
    ``allow`` names the setting that acknowledged a retired size (a warning instead).
    """
    retirement = retirement_of(size)
    if retirement is None:
        return []
    instead = " or ".join(retirement.replacements)
    if retirement.retired(today) and allow:
        return [
            f"{what} {size!r} ({key}) was retired on {retirement.on.isoformat()}: Azure no "
            f"longer provisions it; continuing because {allow} is set (use {instead})"
        ]
    if retirement.retired(today):
        raise ComputeNotAllowedError(
            f"{what} {size!r} ({key}) was retired on {retirement.on.isoformat()} "
            f"({retirement.series} series): Azure no longer provisions it. Use "
            f"{instead} instead (source: {retirement.source})"
        )
    return [
        f"{what} {size!r} ({key}) retires on {retirement.on.isoformat()} "
        f"({retirement.series} series); move to {instead} before then"
    ]


def _size(
    name: str,
    vcpus: int,
    gpus: int,
    family: str,
    memory: float,
    gpu_type: str,
    gpu_memory: float,
) -> VmSizeInfo:
    return VmSizeInfo(name, vcpus, gpus, family, memory, gpu_type, gpu_memory)


#: Pinned facts of GPU sizes (lower-case name -> facts), used only offline (live plans read
#: ``list_sizes``). Retired sizes stay in the table so an old configuration gets a clear error.
KNOWN_VM_SIZES: Mapping[str, VmSizeInfo] = {
    s.name.lower(): s
    for s in (
        # NCv3 (V100 16 GB), retired 2025-09-30
        _size("Standard_NC6s_v3", 6, 1, "standardNCSv3Family", 112, "V100", 16),
        _size("Standard_NC12s_v3", 12, 2, "standardNCSv3Family", 224, "V100", 16),
        _size("Standard_NC24s_v3", 24, 4, "standardNCSv3Family", 448, "V100", 16),
        _size("Standard_NC24rs_v3", 24, 4, "standardNCSv3Family", 448, "V100", 16),
        # NDv2 (8 x V100 32 GB)
        _size("Standard_ND40rs_v2", 40, 8, "standardNDSv2Family", 672, "V100", 32),
        # NCasT4_v3 (T4 16 GB)
        _size("Standard_NC4as_T4_v3", 4, 1, "standardNCASv3_T4Family", 28, "T4", 16),
        _size("Standard_NC8as_T4_v3", 8, 1, "standardNCASv3_T4Family", 56, "T4", 16),
        _size("Standard_NC16as_T4_v3", 16, 1, "standardNCASv3_T4Family", 110, "T4", 16),
        _size("Standard_NC64as_T4_v3", 64, 4, "standardNCASv3_T4Family", 440, "T4", 16),
        # NC A100 v4 (A100 PCIe 80 GB)
        _size("Standard_NC24ads_A100_v4", 24, 1, "standardNCADSA100v4Family", 220, "A100-80GB", 80),
        _size("Standard_NC48ads_A100_v4", 48, 2, "standardNCADSA100v4Family", 440, "A100-80GB", 80),
        _size("Standard_NC96ads_A100_v4", 96, 4, "standardNCADSA100v4Family", 880, "A100-80GB", 80),
        # ND A100 v4 (8 x A100 40 GB NVLink) and NDm A100 v4 (8 x A100 80 GB NVLink)
        _size("Standard_ND96asr_v4", 96, 8, "standardNDASv4_A100Family", 900, "A100-40GB", 40),
        _size(
            "Standard_ND96amsr_A100_v4", 96, 8, "standardNDAMSv4_A100Family", 1900, "A100-80GB", 80
        ),
        # NCads H100 v5 (H100 NVL 94 GB) and ND H100 v5 (8 x H100 80 GB NVLink)
        _size("Standard_NC40ads_H100_v5", 40, 1, "standardNCadsH100v5Family", 320, "H100-NVL", 94),
        _size("Standard_NC80adis_H100_v5", 80, 2, "standardNCadsH100v5Family", 640, "H100-NVL", 94),
        _size("Standard_ND96isr_H100_v5", 96, 8, "standardNDSH100v5Family", 1900, "H100-80GB", 80),
    )
}


def known_size(size: str) -> VmSizeInfo | None:
    """The pinned facts of ``size`` (case-insensitive), ``None`` when it is not pinned."""
    return KNOWN_VM_SIZES.get(size.strip().lower())
