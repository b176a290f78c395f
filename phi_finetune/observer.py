"""One protocol for being told about the resources the SDK creates and deletes.

A :class:`ResourceObserver` is what :class:`~phi_finetune.azure.deployer.EndpointDeployer`,
:class:`~phi_finetune.azure.registrar.ModelRegistrar`, :class:`~phi_finetune.endpoint.Endpoint`
and the backends report to (``observer=``); the session's
:class:`~phi_finetune.backends.JournalObserver` writes a run's journal with it. The 0.1
callbacks (``on_creating``, ``on_created``, ``on_deleted``) still work until 0.3.0, wrapped into
an observer with a :class:`DeprecationWarning`.

This module imports nothing else of the package at run time, so every layer can use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

__all__ = [
    "CallbackObserver",
    "NullObserver",
    "ResourceCallback",
    "ResourceObserver",
    "observer_from_callbacks",
]

#: A deprecated 0.1 callback, ``fn(kind, name)``; the registrar's also get ``version``.
ResourceCallback = Callable[[str, str], object]
_Callback = Callable[..., object]


class ResourceObserver(Protocol):
    """Told about every resource a step creates or deletes.

    ``creating`` right before a create request (a kill while it is in flight still leaves the
    name behind), ``created`` as soon as the service accepted it (before any waiting),
    ``deleted`` once it is gone. ``billable`` defaults to whether the kind costs money while it
    exists (compute, endpoint, deployment).
    """

    def creating(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None: ...

    def created(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None: ...

    def deleted(self, kind: str, name: str, version: str | None = None) -> None: ...


class NullObserver:
    """The :class:`ResourceObserver` that ignores everything (what ``observer=None`` means)."""

    def creating(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        return None

    def created(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        return None

    def deleted(self, kind: str, name: str, version: str | None = None) -> None:
        return None

    def __repr__(self) -> str:
        return "NullObserver()"


@attrs.frozen
class CallbackObserver:
    """The 0.1 callbacks as a :class:`ResourceObserver` (deprecated; removed in 0.3.0).

    Each callback gets ``(kind, name)``, plus ``version`` when ``with_version`` (the
    registrar's arity). A missing callback hands the event to ``fallback``.
    """

    on_creating: _Callback | None = None
    on_created: _Callback | None = None
    on_deleted: _Callback | None = None
    with_version: bool = False
    fallback: ResourceObserver | None = None

    def _call(self, callback: _Callback, kind: str, name: str, version: str | None) -> None:
        if self.with_version:
            callback(kind, name, version)
        else:
            callback(kind, name)

    def creating(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if self.on_creating is not None:
            self._call(self.on_creating, kind, name, version)
        elif self.fallback is not None:
            self.fallback.creating(kind, name, version, billable=billable, details=details)

    def created(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if self.on_created is not None:
            self._call(self.on_created, kind, name, version)
        elif self.fallback is not None:
            self.fallback.created(kind, name, version, billable=billable, details=details)

    def deleted(self, kind: str, name: str, version: str | None = None) -> None:
        if self.on_deleted is not None:
            self._call(self.on_deleted, kind, name, version)
        elif self.fallback is not None:
            self.fallback.deleted(kind, name, version)


def observer_from_callbacks(
    where: str,
    observer: ResourceObserver | None,
    *,
    on_creating: _Callback | None = None,
    on_created: _Callback | None = None,
    on_deleted: _Callback | None = None,
    with_version: bool = False,
    fallback: ResourceObserver | None = None,
    stacklevel: int = 3,
) -> ResourceObserver | None:
    """The observer a call should report to.

    ``observer`` when given, else the deprecated callbacks wrapped into a
    :class:`CallbackObserver` (with a :class:`DeprecationWarning` naming ``where``), else
    ``fallback``. Passing both ``observer`` and callbacks is a :class:`TypeError`.
    """
    given = {
        name: fn
        for name, fn in (
            ("on_creating", on_creating),
            ("on_created", on_created),
            ("on_deleted", on_deleted),
        )
        if fn is not None
    }
    if not given:
        return observer if observer is not None else fallback
    keywords = ", ".join(f"{name}=" for name in given)
    if observer is not None:
        raise TypeError(
            f"{where}: pass either observer= or the deprecated {keywords}, not both; "
            "move the callbacks into the observer's creating/created/deleted methods"
        )
    warnings.warn(
        f"{where}: {keywords} {'is' if len(given) == 1 else 'are'} deprecated and stop"
        f"{'s' if len(given) == 1 else ''} working in 0.3.0; pass observer=, an "
        "object with creating/created/deleted methods (phi_finetune.observer.ResourceObserver)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return CallbackObserver(
        on_creating, on_created, on_deleted, with_version=with_version, fallback=fallback
    )
