"""The one place where azure-core and azure-ai-ml exceptions become the library's errors."""

from __future__ import annotations

from phi_finetune.errors import PhiFinetuneError, ServiceError

__all__ = ["is_transient", "translate"]


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same call may succeed (transport errors, 408, 429, 5xx)."""
    try:
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        return status in (408, 429) or status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


def translate(what: str, exc: BaseException) -> PhiFinetuneError:
    """``exc`` as a library error saying what was asked (``what``) and what went wrong."""
    if isinstance(exc, PhiFinetuneError):
        return exc
    status = getattr(exc, "status_code", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ServiceError(f"could not {what}: {text}", status=status)
