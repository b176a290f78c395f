"""Route table plumbing shared by the ``_routes_*`` modules."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.testing._http import FakeRequest, Reply, azure_error

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore

__all__ = [
    "ARM",
    "REG",
    "WS",
    "Handler",
    "Route",
    "not_found",
    "route",
    "system_data",
]

Handler = Callable[["FakeStore", FakeRequest, "re.Match[str]"], Reply]
"""``handler(store, request, url_match) -> Reply``: handlers see the store, never the fake."""

ARM = r"management\.azure\.com"
_SCOPE = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
_PROVIDER = r"/providers/Microsoft\.MachineLearningServices"
WS = ARM + _SCOPE + _PROVIDER + r"/workspaces/(?P<ws>[^/]+)"
"""ARM workspace root (host + path) as a regex prefix."""
REG = (
    r"[a-z0-9-]+\.api\.azureml\.ms/mferp/managementfrontend"
    + _SCOPE
    + _PROVIDER
    + r"/registries/(?P<reg>[^/]+)"
)
"""Registry data-plane root (host + path) as a regex prefix."""


@attrs.frozen
class Route:
    name: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(name: str, method: str, pattern: str, handler: Handler) -> Route:
    return Route(name, method, re.compile(pattern + r"/?", re.IGNORECASE), handler)


def not_found(kind: str, name: str) -> Reply:
    return azure_error(
        404,
        "UserError",
        f"{kind} {name!r} not found.",
        details=[{"code": "NotFound", "message": f"{kind} {name!r} not found."}],
    )


def system_data() -> dict[str, Any]:
    return {
        "createdAt": "2026-01-01T00:00:00.000000+00:00",
        "createdBy": "fake.user@example.com",
        "createdByType": "User",
        "lastModifiedAt": "2026-01-01T00:00:00.000000+00:00",
        "lastModifiedBy": "fake.user@example.com",
        "lastModifiedByType": "User",
    }
