"""The serverless ("models as a service") part of the fake's state: serverless endpoints with
their keys, and marketplace subscriptions. Held by ``FakeStore.serverless``."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["ServerlessStore"]

Body = dict[str, Any]


class ServerlessStore:
    """Serverless endpoints (REST bodies and keys) and marketplace subscriptions."""

    def __init__(self, lock: threading.RLock, record_key: Callable[[str], None]) -> None:
        self.lock = lock
        self.record_key = record_key
        """Adds a key to the store's ``keys_issued`` (for leak scans)."""
        self._endpoints: dict[str, Body] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._subscriptions: dict[str, Body] = {}

    # ------------------------------------------------------------------ endpoints

    @property
    def endpoints(self) -> Mapping[str, Body]:
        return MappingProxyType(self._endpoints)

    def get_endpoint(self, name: str) -> Body | None:
        return self._endpoints.get(name)

    def list_endpoints(self) -> list[Body]:
        return list(self._endpoints.values())

    def find_endpoint(self, host_label: str) -> str | None:
        """The endpoint whose inference host starts with ``host_label``, ignoring case."""
        return next((n for n in self._endpoints if n.lower() == host_label.lower()), None)

    def put_endpoint(self, name: str, body: Body) -> None:
        """Store an endpoint; a new one gets a fresh primary and secondary key."""
        with self.lock:
            if name not in self._keys:
                keys = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
                self._keys[name] = keys
                for key in keys:
                    self.record_key(key)
            self._endpoints[name] = body

    def delete_endpoint(self, name: str) -> bool:
        """Remove an endpoint and its keys; returns whether it existed."""
        with self.lock:
            self._keys.pop(name, None)
            return self._endpoints.pop(name, None) is not None

    def keys(self, name: str) -> tuple[str, str] | None:
        """``(primary, secondary)`` key of an endpoint, ``None`` when it does not exist."""
        return self._keys.get(name)

    def set_key(
        self, name: str, which: Literal["primary", "secondary"], value: str | None
    ) -> tuple[str, str]:
        """Set a key to ``value`` (a fresh random one when ``None``); returns both keys."""
        with self.lock:
            primary, secondary = self._keys[name]
            new = value if value else secrets.token_urlsafe(32)
            self.record_key(new)
            keys = (new, secondary) if which == "primary" else (primary, new)
            self._keys[name] = keys
        return keys

    def billable(self) -> list[str]:
        """A serverless endpoint of a fine-tuned model bills per hour while it exists."""
        return [f"serverless-endpoint:{name}" for name in self._endpoints]

    # ------------------------------------------------------------------ marketplace

    @property
    def subscriptions(self) -> Mapping[str, Body]:
        return MappingProxyType(self._subscriptions)

    def get_subscription(self, name: str) -> Body | None:
        return self._subscriptions.get(name)

    def list_subscriptions(self) -> list[Body]:
        return list(self._subscriptions.values())

    def put_subscription(self, name: str, body: Body) -> None:
        with self.lock:
            self._subscriptions[name] = body

    def delete_subscription(self, name: str) -> None:
        with self.lock:
            self._subscriptions.pop(name, None)

    def subscription_for(self, model_id: str) -> Body | None:
        """The subscription for a model (ids compared without a version, ignoring case)."""
        wanted = _unversioned(model_id)
        for body in self._subscriptions.values():
            if _unversioned(str(body["properties"].get("modelId", ""))) == wanted:
                return body
        return None


def _unversioned(model_id: str) -> str:
    head, sep, _ = model_id.lower().partition("/versions/")
    return head if sep else model_id.lower()
