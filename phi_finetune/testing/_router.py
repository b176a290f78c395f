"""Route table plumbing shared by the ``_routes_*`` modules."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    "paged",
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


def paged(store: FakeStore, req: FakeRequest, items: Sequence[Any]) -> Reply:
    """One page of a list reply (``store.page_size`` items) with a ``nextLink`` when more follow.

    The page position travels in ``$skipToken``, as the service's ARM lists do.
    """
    token = req.query.get("$skipToken") or "0"
    if not token.isdigit():
        return azure_error(
            400, "BadArgument", f"$skipToken {token!r} is not one this service issued."
        )
    start = int(token)
    size = max(1, int(store.page_size))
    page: dict[str, Any] = {"value": list(items[start : start + size])}
    if start + size < len(items):
        parts = urlsplit(req.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "$skipToken"]
        query.append(("$skipToken", str(start + size)))
        page["nextLink"] = urlunsplit(parts._replace(query=urlencode(query)))
    return Reply(json=page)
