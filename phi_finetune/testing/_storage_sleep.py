"""Skipping azure-storage's own retry back-off while the fake is active.

The storage clients wrap their transport in ``TransportWrapper``, which inherits
``HttpTransport.sleep`` (a real ``time.sleep``), so patching ``RequestsTransport.sleep`` does
not reach the back-off of ``StorageRetryPolicy``: one 503 on an upload really slept ~15 s.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["StorageSleepPatch"]

_MODULES = (
    "azure.storage.blob._shared.base_client",
    "azure.storage.fileshare._shared.base_client",
    "azure.storage.filedatalake._shared.base_client",
)


class StorageSleepPatch:
    """Class-level patch of every installed storage package's ``TransportWrapper.sleep``."""

    def __init__(self) -> None:
        self._saved: list[tuple[type[Any], Any]] = []

    def apply(self, sleep: Callable[[float], None]) -> None:
        """Route the storage retry back-off to ``sleep`` (which records and skips it)."""

        def wrapper_sleep(transport: Any, duration: float) -> None:
            sleep(float(duration))

        for name in _MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            cls = getattr(module, "TransportWrapper", None)
            if not isinstance(cls, type):
                continue
            self._saved.append((cls, cls.__dict__.get("sleep")))
            setattr(cls, "sleep", wrapper_sleep)  # noqa: B010 - a class-level patch

    def restore(self) -> None:
        """Undo ``apply``."""
        for cls, original in reversed(self._saved):
            if original is None:
                del cls.sleep
            else:
                setattr(cls, "sleep", original)  # noqa: B010
        self._saved = []
