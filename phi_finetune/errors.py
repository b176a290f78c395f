"""Every exception phi_finetune raises.

The tree::

    PhiFinetuneError
    ├── ConfigurationError                (also ValueError)
    │   ├── WorkspaceConfigNotFoundError
    │   └── InvalidNameError
    ├── AuthenticationError
    ├── DataValidationError               (also ValueError; .problems: list[DataProblem])
    ├── DataSourceError                   (a data source cannot be read or reached)
    ├── ParameterError                    (also ValueError; .problems: list[ParameterProblem])
    ├── ComputeError
    │   ├── ComputeNotFoundError
    │   ├── ComputeFailedStateError
    │   ├── ComputeNotAllowedError
    │   └── QuotaExceededError            (.needed, .available, .family)
    ├── ModelError
    │   ├── ModelNotFoundError
    │   └── ModelRetiredError             (archived, or past its retirement date)
    ├── JobError
    │   └── JobFailedError                (.job_name, .failing_step, .service_message, .studio_url)
    ├── DeploymentError                   (.log_lines)
    ├── EndpointError
    │   └── InvocationError               (.status, .body_excerpt)
    ├── RunStateError                     (journal: unknown run, corrupt journal, wrong step)
    │   └── RunInUseError                 (another process is writing or driving the run)
    ├── LocalBackendError                 (local training, registry or server)
    ├── ServiceError                      (any other Azure service failure, wrapped; .status)
    │   └── ServiceUnavailableError       (transport error, timeout, 429 or 5xx: retry later)
    └── WaitTimeoutError                  (also TimeoutError)

Every message says what went wrong, where, and what to do next. No message ever holds a key
or a token: build messages from names, never from credentials or request headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

__all__ = [
    "AuthenticationError",
    "ComputeError",
    "ComputeFailedStateError",
    "ComputeNotAllowedError",
    "ComputeNotFoundError",
    "ConfigurationError",
    "DataProblem",
    "DataSourceError",
    "DataValidationError",
    "DeploymentError",
    "EndpointError",
    "InvalidNameError",
    "InvocationError",
    "JobError",
    "JobFailedError",
    "LocalBackendError",
    "ModelError",
    "ModelNotFoundError",
    "ModelRetiredError",
    "ParameterError",
    "ParameterProblem",
    "PhiFinetuneError",
    "QuotaExceededError",
    "RunInUseError",
    "RunStateError",
    "ServiceError",
    "ServiceUnavailableError",
    "WaitTimeoutError",
    "WorkspaceConfigNotFoundError",
]


class PhiFinetuneError(Exception):
    """Base class of every error phi_finetune raises."""


class ConfigurationError(PhiFinetuneError, ValueError):
    """A configuration value, file or name is wrong.

    ``source`` is the file (or ``None`` for values given in Python), ``key`` the dotted key.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        super().__init__(message)
        self.source = source
        self.key = key


class WorkspaceConfigNotFoundError(ConfigurationError):
    """No workspace scope was found; ``searched`` lists every place looked at."""

    def __init__(self, message: str, *, searched: Sequence[str] = ()):
        super().__init__(message)
        self.searched = list(searched)


class InvalidNameError(ConfigurationError):
    """A resource name (endpoint, deployment, model, ...) the service would reject."""


class AuthenticationError(PhiFinetuneError):
    """No credential could get a token; ``attempts`` lists what was tried and why it failed."""

    def __init__(self, message: str, *, attempts: Sequence[str] = ()):
        super().__init__(message)
        self.attempts = list(attempts)


@attrs.frozen
class DataProblem:
    """One problem in one record of a data file."""

    source: str
    """File path, or a label such as ``<DataFrame>`` / ``<records>``."""
    line: int | None
    """1-based line (JSONL) or row number; ``None`` when the whole file is concerned."""
    field: str | None
    """The field concerned, e.g. ``messages[2].role``."""
    message: str
    """What is wrong."""
    fix: str
    """How to fix it."""
    severity: str = "error"
    """``error`` or ``warning``."""
    code: str = "invalid"
    """A stable, machine-readable code such as ``empty-content``."""

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        field = f" [{self.field}]" if self.field else ""
        return f"{where}{field}: {self.message} ({self.fix})"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class DataValidationError(PhiFinetuneError, ValueError):
    """Training or scoring data has problems; ``problems`` lists them (first ones shown)."""

    def __init__(
        self, message: str, *, problems: Iterable[DataProblem] = (), total: int | None = None
    ):
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        shown = "\n".join(f"  - {p}" for p in self.problems[:20])
        more = self.total - min(len(self.problems), 20)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{message}\n{shown}{tail}" if shown else message)


class DataSourceError(PhiFinetuneError):
    """A data source (file, folder, hub dataset) cannot be read or reached."""


@attrs.frozen
class ParameterProblem:
    """One invalid fine-tuning parameter."""

    name: str
    value: Any
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        allowed = f"; allowed: {self.allowed}" if self.allowed else ""
        return f"{self.name}={self.value!r}: {self.message}{allowed}"


class ParameterError(PhiFinetuneError, ValueError):
    """Fine-tuning parameters are wrong; ``problems`` lists every one of them."""

    def __init__(self, message: str, *, problems: Iterable[ParameterProblem] = ()):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{message}\n{shown}" if shown else message)


class ComputeError(PhiFinetuneError):
    """A compute target cannot be used."""


class ComputeNotFoundError(ComputeError):
    """The named cluster does not exist."""


class ComputeFailedStateError(ComputeError):
    """The cluster's provisioning state is ``failed``."""


class ComputeNotAllowedError(ComputeError):
    """The VM size is not allowed for this model (or its GPUs per node are unknown)."""


class QuotaExceededError(ComputeError):
    """The job or deployment needs more vCPUs of a family than the quota leaves."""

    def __init__(self, message: str, *, family: str = "", needed: int = 0, available: int = 0):
        super().__init__(message)
        self.family = family
        self.needed = needed
        self.available = available


class ModelError(PhiFinetuneError):
    """A foundation or registered model cannot be used."""


class ModelNotFoundError(ModelError):
    """The model (name, version or label) does not exist in the registry."""


class ModelRetiredError(ModelError):
    """The model is archived or past its fine-tune/inference retirement date."""


class JobError(PhiFinetuneError):
    """A fine-tuning job could not be submitted, watched or cancelled."""


class JobFailedError(JobError):
    """The pipeline job ended in Failed or Canceled."""

    def __init__(
        self,
        message: str,
        *,
        job_name: str,
        status: str = "Failed",
        failing_step: str | None = None,
        service_message: str | None = None,
        studio_url: str | None = None,
    ):
        super().__init__(message)
        self.job_name = job_name
        self.status = status
        self.failing_step = failing_step
        self.service_message = service_message
        self.studio_url = studio_url


class DeploymentError(PhiFinetuneError):
    """An online deployment failed; ``log_lines`` holds the last lines of its logs."""

    def __init__(self, message: str, *, log_lines: Sequence[str] = ()):
        self.log_lines = list(log_lines)
        logs = "\n".join(f"  | {line}" for line in self.log_lines)
        super().__init__(f"{message}\nLast deployment log lines:\n{logs}" if logs else message)


class EndpointError(PhiFinetuneError):
    """An endpoint cannot be created, found or deleted."""


class InvocationError(EndpointError):
    """A scoring request failed; carries the HTTP status and an excerpt of the body."""

    def __init__(self, message: str, *, status: int | None = None, body_excerpt: str = ""):
        super().__init__(message)
        self.status = status
        self.body_excerpt = body_excerpt


class RunStateError(PhiFinetuneError):
    """A run's journal is missing, corrupt, or does not allow the requested step."""


class LocalBackendError(PhiFinetuneError):
    """The local backend (training, registry or server) failed."""


class ServiceError(PhiFinetuneError):
    """An Azure ML service call failed in a way no more specific error describes."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServiceUnavailableError(ServiceError):
    """Azure ML could not be reached, did not answer in time, throttled (429) or failed on its
    side (5xx); the same call may succeed later. ``status`` is ``None`` for transport errors."""


class WaitTimeoutError(PhiFinetuneError, TimeoutError):
    """Waiting for a job, deployment or server took longer than allowed."""


class RunInUseError(RunStateError):
    """Another process holds the run (it is writing its journal or driving its steps)."""
