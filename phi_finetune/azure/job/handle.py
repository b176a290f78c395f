"""A submitted fine-tuning job: status, logs, wait, cancel, failure details and metrics."""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from phi_finetune.azure.boundary import is_not_found, is_transient, retrying, translate
from phi_finetune.errors import JobError, JobFailedError, WaitTimeoutError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Job

__all__ = ["TERMINAL_STATUSES", "JobHandle", "JobMetrics", "StepFailure"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
_FAILED = frozenset({"Failed", "Canceled", "NotResponding"})
_MAX_DEPTH = 6
_MAX_CHILDREN = 500
#: Which log file of a step to show first (lower is better).
_LOG_ORDER = ("std_log", "user_logs", "70_driver_log", "driver_log", "executionlogs")


def _log_rank(name: str) -> tuple[int, str]:
    lowered = name.lower()
    for rank, part in enumerate(_LOG_ORDER):
        if part in lowered:
            return rank, name
    return len(_LOG_ORDER), name


@attrs.frozen
class StepFailure:
    """Where a job failed: the deepest failed step, its error and the end of its log."""

    step: str | None
    message: str | None
    log_tail: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    """Step names from the submitted job's child down to the failed step."""


@attrs.frozen
class JobMetrics:
    """Training/evaluation metric histories of a job (empty with a ``reason`` when unavailable)."""

    values: Mapping[str, tuple[tuple[int, float], ...]] = attrs.field(factory=dict)
    """metric name -> ((step, value), ...)."""
    reason: str | None = None

    def last(self, name: str) -> float | None:
        history = self.values.get(name) or ()
        return history[-1][1] if history else None


class JobHandle:
    """A submitted pipeline job, a poller in the Azure SDK's sense: :meth:`status`,
    :meth:`done`, :meth:`wait`, :meth:`result`, plus :meth:`stream`, :meth:`cancel`, outputs.

    Reattach after a crash with :meth:`from_name`. Transient service errors while polling are
    retried by :func:`phi_finetune.azure.boundary.retrying` (bounded, logged at DEBUG).
    """

    def __init__(
        self,
        ml_client: MLClient,
        name: str,
        *,
        job: Job | None = None,
        poll_interval_s: float = 15.0,
        retry_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float | None = None,
    ) -> None:
        self.ml_client = ml_client
        self.name = name
        self._job = job
        if poll_interval is not None:
            _deprecated_keyword("poll_interval", "poll_interval_s")
            poll_interval_s = poll_interval
        self.poll_interval_s = poll_interval_s
        self.retry_attempts = retry_attempts
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"JobHandle(name={self.name!r})"

    @classmethod
    def from_name(cls, ml_client: MLClient, job_name: str, **kwargs: Any) -> JobHandle:
        """Reattach to a submitted job by name (raises :class:`JobError` when it is unknown)."""
        handle = cls(ml_client, job_name, **kwargs)
        handle.refresh()
        return handle

    @classmethod
    def attach(cls, ml_client: MLClient, job_name: str, **kwargs: Any) -> JobHandle:
        """Deprecated alias of :meth:`from_name` (removed in 0.3.0)."""
        warnings.warn(
            "JobHandle.attach is deprecated; use JobHandle.from_name",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_name(ml_client, job_name, **kwargs)

    @property
    def poll_interval(self) -> float:
        """Deprecated: :attr:`poll_interval_s`."""
        _deprecated_keyword("poll_interval", "poll_interval_s")
        return self.poll_interval_s

    @poll_interval.setter
    def poll_interval(self, value: float) -> None:
        _deprecated_keyword("poll_interval", "poll_interval_s")
        self.poll_interval_s = value

    # -------------------------------------------------------------- polling
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return retrying(what, attempts=self.retry_attempts, sleep=self._sleep)(fn)
        except Exception as exc:
            if is_not_found(exc):
                raise JobError(
                    f"job {self.name!r} not found in the workspace; check the name (the studio "
                    "lists jobs under the experiment) and the workspace in your configuration"
                ) from exc
            raise translate(what, exc) from exc

    def refresh(self) -> Job:
        """Fetch the job from the service (retrying transient errors)."""
        self._job = self._call(f"get job {self.name!r}", lambda: self.ml_client.jobs.get(self.name))
        return self._job

    def status(self) -> str:
        """The job's current status as the service spells it (``Running``, ``Completed``, ...)."""
        return _status_text(self.refresh().status)

    def done(self) -> bool:
        """Whether the job has ended (one status request)."""
        return self.status() in TERMINAL_STATUSES

    @property
    def studio_url(self) -> str | None:
        job = self._job
        if job is None:
            return None
        url = job.studio_url
        if url:
            return str(url)
        services = job.services or {}
        studio = services.get("Studio") if isinstance(services, Mapping) else None
        endpoint = getattr(studio, "endpoint", None)
        return str(endpoint) if endpoint else None

    @property
    def outputs(self) -> dict[str, str]:
        return {"trained_model": self.trained_model_path}

    @property
    def trained_model_path(self) -> str:
        return f"azureml://jobs/{self.name}/outputs/trained_model"

    # -------------------------------------------------------------- watching
    def stream(self) -> str:
        """Stream the job's logs until it ends; returns the final status.

        Ctrl-C stops watching and returns the current status; the job keeps running (reattach
        with ``phi-finetune job stream NAME``). A failed job raises :class:`JobFailedError`.
        """
        from phi_finetune.progress import progress_enabled

        started = time.monotonic()
        try:
            try:
                self.ml_client.jobs.stream(self.name)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                # JobException: the job failed (the status below says how); transient: the
                # stream broke off, the status below says where the job is.
                if type(exc).__name__ != "JobException" and not is_transient(exc):
                    raise translate(f"stream job {self.name!r}", exc) from exc
                logger.debug("stream of %s ended with %s", self.name, exc)
        except KeyboardInterrupt:
            logger.warning(
                "stopped watching %s; the job keeps running (reattach: phi-finetune job stream "
                "%s; cancel: phi-finetune job cancel %s)",
                self.name,
                self.name,
                self.name,
            )
            return self.status()
        status = self.status()
        if progress_enabled():
            import sys

            sys.stderr.write(f"{self.name}: {status} after {time.monotonic() - started:.0f}s\n")
        self._raise_if_failed(status)
        return status

    def watch(
        self, *, poll_interval_s: float | None = None, poll_interval: float | None = None
    ) -> Iterator[str]:
        """Yield the status at each poll until the job ends (no logs)."""
        interval = self._interval(poll_interval_s, poll_interval)
        while True:
            status = self.status()
            yield status
            if status in TERMINAL_STATUSES:
                return
            self._sleep(interval)

    def _interval(self, poll_interval_s: float | None, poll_interval: float | None) -> float:
        if poll_interval is not None:
            _deprecated_keyword("poll_interval", "poll_interval_s")
            poll_interval_s = poll_interval
        return self.poll_interval_s if poll_interval_s is None else poll_interval_s

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll_interval_s: float | None = None,
        poll_interval: float | None = None,
    ) -> str:
        """Poll until the job ends; raise :class:`WaitTimeoutError` after ``timeout`` seconds
        and :class:`JobFailedError` when it failed. Returns the final status.

        Shows a progress line (status and elapsed time) when progress is enabled; Ctrl-C stops
        waiting and never cancels the job.
        """
        from phi_finetune.progress import progress_bar

        interval = self._interval(poll_interval_s, poll_interval)
        started = time.monotonic()
        bar = progress_bar(desc=self.name, total=None, unit="poll")
        try:
            while True:
                status = self.status()
                elapsed = time.monotonic() - started
                bar.set_postfix_str(f"{status}, {elapsed:.0f}s")
                bar.update(1)
                if status in TERMINAL_STATUSES:
                    break
                if timeout is not None and elapsed >= timeout:
                    raise WaitTimeoutError(
                        f"job {self.name!r} still {status} after {elapsed:.0f}s (timeout "
                        f"{timeout:.0f}s); it keeps running. Wait again with "
                        f"JobHandle.from_name(ml_client, {self.name!r}).wait()"
                    )
                self._sleep(interval)
        except KeyboardInterrupt:
            logger.warning("stopped waiting for %s; the job keeps running", self.name)
            raise
        finally:
            bar.close()
        self._raise_if_failed(status)
        return status

    def result(self, timeout: float | None = None) -> str:
        """Wait until the job ends (see :meth:`wait`); the ``trained_model`` output path that
        :class:`~phi_finetune.azure.registrar.ModelRegistrar` registers."""
        self.wait(timeout)
        return self.trained_model_path

    def cancel(self) -> None:
        """Cancel the job and wait for the service to accept it; succeeds (doing nothing) when
        the job already ended or no longer exists."""
        try:
            status = self.status()
        except JobError as exc:
            if isinstance(exc.__cause__, BaseException) and is_not_found(exc.__cause__):
                logger.info("job %s no longer exists; nothing to cancel", self.name)
                return
            raise
        if status in TERMINAL_STATUSES:
            logger.info("job %s already ended (%s); nothing to cancel", self.name, status)
            return
        poller = self._call(
            f"cancel job {self.name!r}", lambda: self.ml_client.jobs.begin_cancel(self.name)
        )
        self._call(f"cancel job {self.name!r}", poller.result)
        logger.info("job %s canceled", self.name)

    # -------------------------------------------------------------- results
    def failure(self) -> tuple[str | None, str | None]:
        """``(failing step, service message)`` of a failed job, as far as known (see
        :meth:`failure_details`)."""
        details = self.failure_details(log_lines=0)
        return details.step, details.message

    def failure_details(self, *, log_lines: int = 20) -> StepFailure:
        """The deepest failed step of the job tree: its name, error and last ``log_lines``.

        A job submitted from a registry pipeline component has one child of type pipeline whose
        children are the steps, so the failed step is a grandchild (or deeper): the walk
        follows failed children down (bounded depth), preferring ``Failed`` over ``Canceled``.
        """
        node, path = self._deepest_failed()
        step: str | None = None
        message: str | None = None
        tail: tuple[str, ...] = ()
        if node is not None:
            step = path[-1]
            message = _error_message(node)
            node_name = str(getattr(node, "name", "") or "")
            if message is None and node_name:
                message = self._run_history_error(node_name)[1]
            if log_lines > 0 and node_name:
                tail = self._log_tail(node_name, log_lines)
        if message is None or step is None:
            run_step, run_message = self._run_history_error(self.name)
            step = step or run_step
            message = message or run_message
        job = self._job
        if message is None and job is not None:
            message = _error_message(job)
        if step is None and job is not None:
            props = job.properties or {}
            step = props.get("azureml.failedNodeName") or props.get("failing_step")
        return StepFailure(step=step, message=message, log_tail=tail, path=tuple(path))

    def _children(self, name: str) -> list[Any]:
        try:
            return list(
                itertools.islice(self.ml_client.jobs.list(parent_job_name=name), _MAX_CHILDREN)
            )
        except Exception as exc:  # best effort: the failure report must not fail
            logger.debug("could not list child jobs of %s: %s", name, exc)
            return []

    def _deepest_failed(self) -> tuple[Any, list[str]]:
        """The deepest failed node under this job and the step names leading to it."""
        node: Any = None
        path: list[str] = []
        parent = self.name
        for _ in range(_MAX_DEPTH):
            failed = [c for c in self._children(parent) if _status_text(c.status) in _FAILED]
            if not failed:
                break
            # A canceled sibling is usually collateral of the step that failed.
            failed.sort(key=lambda c: _status_text(c.status) != "Failed")
            node = failed[0]
            path.append(str(node.display_name or node.name or ""))
            parent = str(node.name or "")
            if not parent:
                break
        return node, path

    def _run_history_error(self, run_id: str | None = None) -> tuple[str | None, str | None]:
        """A run's error from run history (the SDK's job entities drop it)."""
        run_id = run_id or self.name
        try:
            run = self.ml_client.jobs._runs_operations.get_run(run_id)
        except Exception as exc:  # best effort: private SDK surface
            logger.debug("run history of %s unavailable: %s", run_id, exc)
            return None, None
        response = getattr(run, "error", None)
        error = getattr(response, "error", None)
        message = getattr(error, "message", None)
        step = getattr(response, "component_name", None) or getattr(error, "target", None)
        return (str(step) if step else None), (str(message) if message else None)

    def _log_tail(self, run_id: str, lines: int) -> tuple[str, ...]:
        """The last ``lines`` of a step's user log (``std_log`` first), redacted; best effort."""
        from phi_finetune._redact import redact

        try:
            jobs = self.ml_client.jobs
            details = jobs._runs_operations.get_run_details(run_id)
            files = dict(getattr(details, "log_files", None) or {})
            if not files:
                return ()
            chosen = min(files, key=_log_rank)
            response = jobs._requests_pipeline.get(files[chosen])
            if getattr(response, "status_code", 200) != 200:
                return ()
            text = response.text()
        except Exception as exc:  # private SDK surface; the error being raised matters more
            logger.debug("logs of %s unavailable: %s", run_id, exc)
            return ()
        if not isinstance(text, str):
            return ()
        return tuple(redact(line) for line in text.splitlines()[-lines:])

    def _raise_if_failed(self, status: str) -> None:
        if status not in _FAILED:
            return
        failure = self.failure_details()
        step, message = failure.step, failure.message
        where = f" in step {step!r}" if step else ""
        detail = f": {message}" if message else ""
        url = self.studio_url
        tail = "".join(f"\n  {line}" for line in failure.log_tail)
        raise JobFailedError(
            f"job {self.name!r} ended {status}{where}{detail}"
            + (f"\nlast log lines of {step or 'the step'}:{tail}" if tail else "")
            + (f"\nstudio: {url}" if url else "")
            + "\nFix the cause, then submit again (a new job; nothing is reused).",
            job_name=self.name,
            status=status,
            failing_step=step,
            service_message=message,
            studio_url=url,
        )

    def metrics(self, *, tracking_uri: str | None = None) -> JobMetrics:
        """Training/eval loss histories from the run history through MLflow, when available."""
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError:
            return JobMetrics(reason="mlflow is not installed")
        try:
            uri = self._tracking_uri() if tracking_uri is None else tracking_uri
            if not uri:
                return JobMetrics(reason="the workspace has no MLflow tracking URI")
            client = MlflowClient(tracking_uri=uri)
            runs = [self.name]
            experiment = None if self._job is None else self._job.experiment_name
            if experiment:
                exp = client.get_experiment_by_name(str(experiment))
                if exp is not None:
                    children = client.search_runs(
                        [exp.experiment_id], f"tags.mlflow.parentRunId = '{self.name}'"
                    )
                    runs += [r.info.run_id for r in children]
            values: dict[str, tuple[tuple[int, float], ...]] = {}
            for run_id in runs:
                try:
                    run = client.get_run(run_id)
                except mlflow.exceptions.MlflowException:
                    continue
                for key in run.data.metrics:
                    history = client.get_metric_history(run_id, key)
                    values[key] = tuple((int(m.step), float(m.value)) for m in history)
        except Exception as exc:
            return JobMetrics(reason=f"metrics unavailable: {type(exc).__name__}: {exc}")
        if not values:
            return JobMetrics(reason="no metrics were logged (yet)")
        return JobMetrics(values=values)

    def _tracking_uri(self) -> str | None:
        workspace_name = self.ml_client.workspace_name
        if not workspace_name:
            return None
        workspace = self._call(
            f"get workspace {workspace_name!r}",
            lambda: self.ml_client.workspaces.get(workspace_name),
        )
        uri = workspace.mlflow_tracking_uri
        return str(uri) if uri else None


def _error_message(job: Any) -> str | None:
    # Job entities carry no ``error`` attribute in azure-ai-ml 1.35 (the fake and newer SDKs
    # may set one), and child jobs come back as several Job subclasses: read defensively.
    error = getattr(job, "error", None)
    if error is not None:
        text = getattr(error, "message", None) or str(error)
        return str(text) if text else None
    props = getattr(job, "properties", None) or {}
    if isinstance(props, Mapping):
        for key in ("azureml.error", "error_message", "errorMessage"):
            if props.get(key):
                return str(props[key])
    return None


def _deprecated_keyword(old: str, new: str) -> None:
    warnings.warn(
        f"JobHandle {old} is deprecated; use {new} (durations end in _s)",
        DeprecationWarning,
        stacklevel=3,
    )


def _status_text(status: Any) -> str:
    """A job status as its service string (the SDK may return a ``JobStatus`` enum)."""
    if status is None:
        return "Unknown"
    return str(getattr(status, "value", status))
