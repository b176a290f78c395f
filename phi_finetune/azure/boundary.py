"""The one place where azure-core and azure-ai-ml exceptions become the library's errors.

Everything in :mod:`phi_finetune.azure` (and the Azure side of :mod:`phi_finetune.endpoint`)
calls the service through this module:

- :func:`translate` turns an exception into a library error whose message says what was asked,
  what went wrong and what to do (redacted: no key or token ever lands in a message);
- :func:`call` / :func:`azure_errors` run a call and raise :func:`translate`'s error ``from``
  the original; exceptions that do not come from the service (bugs) propagate unchanged;
- :func:`get_or_none` is a ``get`` where "not found" means ``None``;
- :func:`is_transient` says whether retrying may help, and :func:`retrying` is the one tenacity
  retry policy (bounded attempts, exponential backoff, injectable sleep, DEBUG logging);
- :func:`call` and :func:`get_or_none` retry transient faults themselves (connection reset,
  read timeout, 408, 429 honouring ``Retry-After`` up to :data:`MAX_RETRY_AFTER_S`, 5xx):
  :data:`CALL_ATTEMPTS` tries with exponential back-off, because azure-core's own retry policy
  does not retry a reset or a timeout on a POST (``listSecrets``, ``listKeys``) and
  azure-storage-blob's does not retry a 429; a 409 Conflict that says an operation on the
  resource is in progress (it is being created or deleted) is waited out for up to
  :data:`CONFLICT_DEADLINE_S` seconds of back-off, then becomes a clear error;
- :func:`sleeping` sends every back-off wait to another function (tests record, never sleep).

The mapping::

    ClientAuthenticationError, HTTP 401         -> AuthenticationError
    HTTP 403                                    -> ServiceError(status=403), names the role to get
    ResourceNotFoundError, HTTP 404             -> ``not_found`` (given by the caller) or
                                                   ServiceError(status=404)
    ResourceExistsError, HTTP 409               -> ServiceError(status=409) (an operation in
                                                   progress is waited out first)
    HTTP 408/429/5xx, ServiceRequestError,
    ServiceResponseError, timeouts, connection
    errors                                      -> ServiceUnavailableError (retry later)
    other HttpResponseError                     -> ServiceError(status=...)
    azure-ai-ml ValidationException             -> ConfigurationError
    other azure-ai-ml MlException / AzureError  -> ServiceError
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from phi_finetune._redact import redact
from phi_finetune.errors import (
    AuthenticationError,
    ConfigurationError,
    PhiFinetuneError,
    ServiceError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "CALL_ATTEMPTS",
    "CONFLICT_DEADLINE_S",
    "MAX_RETRY_AFTER_S",
    "NotFound",
    "azure_errors",
    "call",
    "get_or_none",
    "is_conflict_in_progress",
    "is_not_found",
    "is_service_exception",
    "is_transient",
    "retry_after_s",
    "retrying",
    "sleeping",
    "translate",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: ``not_found(message) -> error`` builds the error for a 404 (e.g. ``EndpointError``).
NotFound = Callable[[str], PhiFinetuneError]

_MAX_REASON = 400
_TRANSIENT_STATUSES = frozenset({408, 429})

CALL_ATTEMPTS = 4
"""How many times :func:`call` tries a call that fails transiently (each try is itself retried
by azure-core's policy where that applies)."""
MAX_RETRY_AFTER_S = 60.0
"""A ``Retry-After`` longer than this is waited this long (the service may ask for minutes)."""
CONFLICT_DEADLINE_S = 600.0
"""How long (seconds of back-off in total) :func:`call` waits out a 409 "operation in
progress" before giving up: endpoint and deployment creates and deletes take minutes."""
_MAX_BACKOFF_S = 30.0
_IN_PROGRESS = re.compile(
    r"in progress|being (?:created|deleted|updated|provisioned)|another operation|ongoing|"
    r"(?:creating|deleting|updating|provisioning) state|state (?:creating|deleting|updating)|"
    r"transition|try again later|retry later|OperationInProgress|Conflicting",
    re.IGNORECASE,
)


def _core() -> Any:
    try:
        from azure.core import exceptions
    except ImportError:  # pragma: no cover - azure-core is a dependency
        return None
    return exceptions


def _ml_exceptions() -> Any:
    # Only look at azure-ai-ml's exceptions when the SDK is loaded: importing it costs ~1.6 s,
    # and an exception of its types cannot exist before that.
    return sys.modules.get("azure.ai.ml.exceptions")


def _status(exc: BaseException) -> int | None:
    core = _core()
    if core is not None and isinstance(exc, core.HttpResponseError):
        status = exc.status_code
        return int(status) if isinstance(status, int) else None
    return None


def _is_timeout(exc: BaseException) -> bool:
    core = _core()
    if isinstance(exc, TimeoutError):
        return True
    if core is not None:
        timeouts = tuple(
            getattr(core, name)
            for name in ("ServiceRequestTimeoutError", "ServiceResponseTimeoutError")
            if hasattr(core, name)
        )
        if timeouts and isinstance(exc, timeouts):
            return True
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.Timeout):
        return True
    # azure-core wraps a requests/urllib3 read timeout in ServiceResponseError; look at the cause.
    inner = exc.__cause__ or getattr(exc, "inner_exception", None)
    return isinstance(inner, BaseException) and inner is not exc and _is_timeout_leaf(inner)


def _is_timeout_leaf(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError"})


def _is_transport(exc: BaseException) -> bool:
    core = _core()
    if core is not None and isinstance(exc, core.ServiceRequestError | core.ServiceResponseError):
        return True
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same call may succeed (transport errors, timeouts, 408, 429, 5xx)."""
    if isinstance(exc, ServiceUnavailableError):
        return True
    if _is_transport(exc):
        return True
    status = _status(exc)
    return status is not None and (status in _TRANSIENT_STATUSES or status >= 500)


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is the service's "not found" (``ResourceNotFoundError`` or HTTP 404)."""
    core = _core()
    if core is not None and isinstance(exc, core.ResourceNotFoundError):
        return True
    return _status(exc) == 404


def _response_header(exc: BaseException, name: str) -> Any:
    """Header ``name`` of the reply behind ``exc`` (either spelling), or ``None``."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        return headers.get(name) or headers.get(name.lower())
    except Exception:  # an odd header container: no hint
        return None


def retry_after_s(exc: BaseException) -> float | None:
    """The ``Retry-After`` (seconds) of the reply behind ``exc``, if it carried one."""
    value = _response_header(exc, "Retry-After")
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return _http_date_delay(str(value))
    return max(0.0, seconds)


def _http_date_delay(value: str) -> float | None:
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    import datetime as dt

    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def is_conflict_in_progress(exc: BaseException) -> bool:
    """Whether ``exc`` is a 409 Conflict because another operation on the resource is under way
    (it is being created, updated or deleted): waiting helps, unlike "already exists"."""
    core = _core()
    conflict = _status(exc) == 409 or (
        core is not None and isinstance(exc, core.ResourceExistsError) and _status(exc) is None
    )
    if not conflict:
        return False
    if retry_after_s(exc) is not None:
        return True
    return _IN_PROGRESS.search(str(exc)) is not None


def is_service_exception(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the service or the transport (not from a bug in the caller)."""
    if isinstance(exc, PhiFinetuneError):
        return False
    core = _core()
    if core is not None and isinstance(exc, core.AzureError):
        return True
    ml = _ml_exceptions()
    if ml is not None and isinstance(exc, ml.MlException):
        return True
    if type(exc).__name__ in ("JobException", "ValidationException", "MlException"):
        return True
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.RequestException):
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def _reason(exc: BaseException) -> str:
    """The service's own words: the first line of the message, redacted and shortened."""
    message = getattr(exc, "message", None)
    text = str(message if isinstance(message, str) and message else exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    first = redact(first)
    if len(first) > _MAX_REASON:
        first = first[: _MAX_REASON - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_TENANT = re.compile(
    r"(?:authorization_uri|authorization)=\"?https://[^/\"]+/(?P<tenant>[0-9a-fA-F-]{36}|[\w.-]+)"
)


def _challenge_tenant(exc: BaseException) -> str | None:
    """The tenant named by a 401's ``WWW-Authenticate`` challenge (Bearer authorization_uri)."""
    challenge = _response_header(exc, "WWW-Authenticate")
    found = _TENANT.search(str(challenge or ""))
    tenant = found.group("tenant") if found else None
    return tenant if tenant and tenant not in ("common", "organizations") else None


def translate(
    what: str, exc: BaseException, *, not_found: NotFound | None = None
) -> PhiFinetuneError:
    """``exc`` as a library error: what was asked (``what``, e.g. ``"get endpoint 'x'"``), what
    went wrong and what to do. A library error is returned unchanged. Raise it ``from exc``."""
    if isinstance(exc, PhiFinetuneError):
        return exc
    core = _core()
    reason = _reason(exc)
    status = _status(exc)
    asked = f"could not {what}"

    if (core is not None and isinstance(exc, core.ClientAuthenticationError)) or status == 401:
        tenant = _challenge_tenant(exc)
        login = f"`az login --tenant {tenant}`" if tenant else "`az login` (--tenant TENANT)"
        return AuthenticationError(
            f"{asked}: authentication failed ({reason}). The credential in use (the one you "
            "passed, else DefaultAzureCredential: environment variables, managed identity, the "
            f"Azure CLI login) no longer gets a valid token. Sign in again with {login} or "
            "pass another credential for the workspace's tenant, then continue with "
            "`phi-finetune resume RUN_ID` (nothing is lost: the run's journal is kept).",
            attempts=[reason],
        )
    if status == 403:
        return ServiceError(
            f"{asked}: access denied ({reason}). The signed-in identity lacks a role on the "
            "workspace or registry: ask for 'AzureML Data Scientist' (or Contributor) on it, or "
            "sign in as another identity.",
            status=403,
        )
    if is_not_found(exc):
        message = (
            f"{asked}: it does not exist ({reason}). Check the name and that the configuration "
            "points at the right subscription, resource group, workspace and registry names."
        )
        return not_found(message) if not_found is not None else ServiceError(message, status=404)
    if (core is not None and isinstance(exc, core.ResourceExistsError)) or status == 409:
        return ServiceError(
            f"{asked}: conflict ({reason}). It already exists or another operation on it is in "
            "progress: wait for that to finish and retry, or choose another name.",
            status=409,
        )
    if _is_timeout(exc):
        return ServiceUnavailableError(
            f"{asked}: Azure ML did not answer in time ({reason}). The service or the network "
            "is slow: retry later; check the network and proxy settings if it keeps happening.",
            status=status,
        )
    if _is_transport(exc):
        return ServiceUnavailableError(
            f"{asked}: could not reach Azure ML ({reason}). Check the network connection, DNS "
            "and proxy settings (HTTPS_PROXY), then retry.",
        )
    if status == 429:
        return ServiceUnavailableError(
            f"{asked}: Azure ML is throttling requests ({reason}). Wait a minute and retry; "
            "fewer parallel runs help.",
            status=429,
        )
    if status is not None and (status == 408 or status >= 500):
        return ServiceUnavailableError(
            f"{asked}: Azure ML failed on its side (HTTP {status}: {reason}). Retry later; if it "
            "persists, check https://status.azure.com.",
            status=status,
        )
    if status is not None:
        return ServiceError(
            f"{asked}: Azure ML refused the request (HTTP {status}: {reason}). Check the values "
            "named in the message and correct them.",
            status=status,
        )
    ml = _ml_exceptions()
    if ml is not None and isinstance(exc, ml.ValidationException):
        return ConfigurationError(
            f"{asked}: the Azure ML SDK rejected the request ({reason}). Correct the value it "
            "names and try again."
        )
    return ServiceError(
        f"{asked}: {reason}. Retry; if it keeps failing, run with -v for the traceback and "
        "check the Azure ML studio."
    )


@contextlib.contextmanager
def azure_errors(what: str, *, not_found: NotFound | None = None) -> Iterator[None]:
    """``with azure_errors("get compute 'gpu'"):`` raises :func:`translate`'s error for service
    and transport exceptions (``from`` the original); other exceptions pass unchanged."""
    try:
        yield
    except PhiFinetuneError:
        raise
    except Exception as exc:
        if not is_service_exception(exc):
            raise
        raise translate(what, exc, not_found=not_found) from exc


def call(
    what: str,
    fn: Callable[[], T],
    *,
    not_found: NotFound | None = None,
    attempts: int = CALL_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()`` with transient faults retried and a 409 "in progress" waited out (see the module
    docstring), then service exceptions translated (see :func:`azure_errors`). ``fn`` must be
    safe to repeat (a GET, a PUT of a named resource, a DELETE, a ``list...`` POST)."""
    with azure_errors(what, not_found=not_found):
        return _with_retries(what, fn, attempts=attempts, sleep=sleep)


def get_or_none(
    what: str,
    fn: Callable[[], T],
    *,
    attempts: int = CALL_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """``fn()``, or ``None`` when the service answers "not found"; transient faults retried as in
    :func:`call`; other failures translated."""
    try:
        return _with_retries(what, fn, attempts=attempts, sleep=sleep)
    except PhiFinetuneError:
        raise
    except Exception as exc:
        if is_not_found(exc):
            return None
        if not is_service_exception(exc):
            raise
        raise translate(what, exc) from exc


def _backoff_s(failures: int) -> float:
    return float(min(_MAX_BACKOFF_S, 2.0 ** max(0, failures - 1)))


def _with_retries(
    what: str, fn: Callable[[], T], *, attempts: int, sleep: Callable[[float], None]
) -> T:
    failures = 0
    waited_on_conflict = 0.0
    while True:
        try:
            return fn()
        except PhiFinetuneError:
            raise
        except Exception as exc:
            if not is_service_exception(exc):
                raise
            failures += 1
            hint = retry_after_s(exc)
            if is_conflict_in_progress(exc):
                delay = min(hint if hint is not None else _backoff_s(failures), _MAX_BACKOFF_S)
                if waited_on_conflict + delay > CONFLICT_DEADLINE_S:
                    raise _conflict_timeout(what, exc, waited_on_conflict) from exc
                waited_on_conflict += delay
            elif is_transient(exc) and failures < max(1, attempts):
                delay = min(hint, MAX_RETRY_AFTER_S) if hint is not None else _backoff_s(failures)
            else:
                raise
            logger.debug(
                "%s failed (%s, try %d); retrying in %.1f s", what, _reason(exc), failures, delay
            )
            _do_sleep(sleep, delay)


def _conflict_timeout(what: str, exc: BaseException, waited_s: float) -> ServiceError:
    return ServiceError(
        f"could not {what}: Azure ML still reports another operation in progress on it after "
        f"waiting {waited_s:.0f} s ({_reason(exc)}). Wait until the resource is no longer "
        "Creating/Updating/Deleting (see the Azure ML studio), then run the command again "
        "(`phi-finetune resume` continues a run).",
        status=409,
    )


_sleep_override: list[Callable[[float], None]] = []


@contextlib.contextmanager
def sleeping(sleep: Callable[[float], None]) -> Iterator[None]:
    """While active, every back-off wait the library would sleep with :func:`time.sleep` goes to
    ``sleep`` instead (a test tool: record the waits, never sleep them). A ``sleep=`` passed to
    a class or function explicitly still wins."""
    _sleep_override.append(sleep)
    try:
        yield
    finally:
        _sleep_override.remove(sleep)


def _do_sleep(sleep: Callable[[float], None], seconds: float) -> None:
    (_sleep_override[-1] if _sleep_override and sleep is time.sleep else sleep)(seconds)


def retrying(
    what: str,
    *,
    attempts: int = 5,
    max_wait_s: float = 30.0,
    multiplier_s: float = 1.0,
    retry_on: Callable[[BaseException], bool] = is_transient,
    wait: Callable[[tenacity.RetryCallState], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """The retry policy: up to ``attempts`` tries of what ``retry_on`` accepts, exponential
    backoff (``multiplier_s`` doubling, capped at ``max_wait_s``) unless ``wait`` is given,
    ``sleep`` injectable for tests (:func:`sleeping` overrides it), a ``Retry-After`` on the
    failed reply honoured (at most :data:`MAX_RETRY_AFTER_S`), each retry logged at DEBUG; the
    last error is re-raised."""
    import tenacity

    def log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.debug(
            "%s failed (attempt %d of %d: %s); retrying in %.1f s",
            what,
            state.attempt_number,
            attempts,
            _reason(exc) if exc is not None else "no error",
            delay,
        )

    exponential = tenacity.wait_exponential(multiplier=multiplier_s, max=max_wait_s)

    def wait_retry_after_or_exponential(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = retry_after_s(exc) if exc is not None else None
        if hint is not None:
            return min(hint, MAX_RETRY_AFTER_S)
        return float(exponential(state))

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_on),
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=wait or wait_retry_after_or_exponential,
        sleep=lambda seconds: _do_sleep(sleep, seconds),
        before_sleep=log_retry,
        reraise=True,
    )
