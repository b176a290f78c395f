"""What a workspace client learns once about its region: the location and the VM size catalogue.

azure-ai-ml reads the workspace before every ``list_sizes`` / ``list_usage`` without a
location; the catalogue (vCPUs, GPUs, family per size) does not change during a run.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["cached_sizes", "remember_sizes", "workspace_location"]

# Per workspace client: its region, and the region's VM sizes (a static catalogue) once read.
_REGIONS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_SIZES: weakref.WeakKeyDictionary[Any, tuple[str | None, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def workspace_location(ml_client: Any) -> str | None:
    """The workspace's region, read once per client; ``None`` when it cannot be read (the SDK
    then reads it itself). Without it azure-ai-ml reads the workspace before every size or
    usage list."""
    try:
        cached = _REGIONS.get(ml_client)
    except TypeError:  # a client that cannot be weakly referenced: no cache
        return None
    if cached:
        return cached
    name = getattr(ml_client, "workspace_name", None)
    if not isinstance(name, str) or not name:
        return None
    try:
        workspace = ml_client.workspaces.get(name)
    except Exception as exc:  # best effort: the SDK's own lookup reports the failure
        logger.debug("could not read the region of workspace %s: %s", name, exc)
        return None
    location = getattr(workspace, "location", None)
    if not isinstance(location, str) or not location:
        return None
    _REGIONS[ml_client] = location
    return location


def cached_sizes(ml_client: Any, location: str | None) -> tuple[Any, ...] | None:
    """The region's size list read earlier through this client (``None``: not read yet)."""
    try:
        cached = _SIZES.get(ml_client)
    except TypeError:
        return None
    if cached is None or cached[0] != location:
        return None
    return cached[1]


def remember_sizes(ml_client: Any, location: str | None, sizes: Sequence[Any]) -> None:
    """Keep the region's size list of this client for :func:`cached_sizes`."""
    with contextlib.suppress(TypeError):
        _SIZES[ml_client] = (location, tuple(sizes))
