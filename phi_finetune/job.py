"""Steps 10-11: build the fine-tuning pipeline, plan it offline, submit it and watch it.

:class:`FineTuneJob` puts the foundation model, the compute, the parameters and the data
together exactly as the reference notebook does (``@pipeline(name=display_name)`` calling
``chat_completion_pipeline`` with ``mlflow_model_path``, the four ``compute_*`` inputs, the
train/validation/test files, ``number_of_gpu_to_use_finetuning`` and the parameters; output
``trained_model`` from ``mlflow_model_folder``; ``force_rerun=True``,
``continue_on_step_failure=False``). :meth:`FineTuneJob.plan` does every check without
submitting (offline with a local component YAML or the pinned interface);
:meth:`FineTuneJob.submit` returns a :class:`JobHandle`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from phi_finetune.compute import ComputeSelection, ComputeSelector
from phi_finetune.errors import (
    ConfigurationError,
    JobError,
    JobFailedError,
    ParameterError,
    ParameterProblem,
    PhiFinetuneError,
    ServiceError,
    WaitTimeoutError,
)
from phi_finetune.foundation_model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REGISTRY,
    FoundationModel,
    check_lifecycle,
    resolve_foundation_model,
)
from phi_finetune.interface import (
    ComponentInterface,
    InterfaceReport,
    compare_interfaces,
    interface_from_component,
    load_pinned_interface,
)
from phi_finetune.parameters import FineTuneParameters

__all__ = [
    "COMPONENT_NAME",
    "TERMINAL_STATUSES",
    "FineTuneJob",
    "FineTunePlan",
    "JobHandle",
    "JobMetrics",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

COMPONENT_NAME = "chat_completion_pipeline"
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
_FAILED = frozenset({"Failed", "Canceled", "NotResponding"})
_PLACEHOLDER_DATA = {
    "train": "azureml:<train-data>:1",
    "validation": "azureml:<validation-data>:1",
    "test": "azureml:<test-data>:1",
}


# --------------------------------------------------------------------------- plan
@attrs.frozen
class FineTunePlan:
    """Everything a submit would do, checked: model, compute, parameters, names, pipeline YAML."""

    model: FoundationModel
    compute: ComputeSelection
    parameters: FineTuneParameters
    display_name: str
    experiment_name: str
    component_id: str
    data: Mapping[str, str]
    tags: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    interface_report: InterfaceReport | None = None
    pipeline_yaml: str = attrs.field(default="", repr=False)
    offline: bool = False

    @property
    def effective_batch_size(self) -> int:
        return self.parameters.effective_batch_size(self.compute.gpus_per_node, self.compute.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "compute": self.compute.to_dict(),
            "parameters": self.parameters.to_dict(),
            "dropped_model_defaults": list(self.parameters.dropped),
            "display_name": self.display_name,
            "experiment_name": self.experiment_name,
            "component_id": self.component_id,
            "data": dict(self.data),
            "tags": dict(self.tags),
            "effective_batch_size": self.effective_batch_size,
            "warnings": list(self.warnings),
            "interface_changes": (
                [str(c) for c in self.interface_report.changes] if self.interface_report else []
            ),
            "pipeline_yaml": self.pipeline_yaml,
            "offline": self.offline,
        }

    def to_table(self) -> str:
        """A plain-text summary: model, compute, names, then every parameter with its source."""
        c = self.compute
        rows = [
            ("model", f"{self.model.name} {self.model.version} ({self.model.id})"),
            ("component", self.component_id),
            (
                "compute",
                f"{c.name} ({c.vm_size}, {c.gpus_per_node} GPU/node x {c.nodes} node(s))"
                + (" [will be created]" if c.will_create else ""),
            ),
            ("display name", self.display_name),
            ("experiment", self.experiment_name),
            ("effective batch", str(self.effective_batch_size)),
        ]
        rows += [(f"data.{k}", v) for k, v in self.data.items()]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        lines.append("")
        params = [
            (n, repr(v.value), str(v.source)) for n, v in sorted(self.parameters.values.items())
        ]
        w1 = max([len("parameter")] + [len(p[0]) for p in params])
        w2 = max([len("value")] + [len(p[1]) for p in params])
        lines.append(f"{'parameter'.ljust(w1)}  {'value'.ljust(w2)}  source")
        lines.append(f"{'-' * w1}  {'-' * w2}  {'-' * 17}")
        lines += [f"{n.ljust(w1)}  {v.ljust(w2)}  {s}" for n, v, s in params]
        if self.warnings:
            lines.append("")
            lines += [f"warning: {w}" for w in self.warnings]
        if self.offline:
            lines.append("")
            lines.append(
                "offline plan: registry, cluster state and quota were not checked; "
                "run without --offline to check them"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


# --------------------------------------------------------------------------- job
class FineTuneJob:
    """A fine-tuning pipeline job: plan it, submit it.

    ``component`` may be a live azure-ai-ml component, a path to a local component YAML (offline
    plans), a :class:`ComponentInterface` (offline plans from the pinned interface) or ``None``
    (fetched from the registry by ``component_name`` and ``component_version``/``label``).
    ``model`` may be a :class:`FoundationModel` or a name resolved through ``registry_client``.
    ``compute`` may be a :class:`ComputeSelection` or a :class:`ComputeSelector`.
    """

    def __init__(
        self,
        *,
        ml_client: Any = None,
        registry_client: Any = None,
        model: FoundationModel | str = DEFAULT_MODEL_NAME,
        model_version: str | int | None = None,
        model_label: str | None = "latest",
        allow_retired: bool = False,
        compute: ComputeSelection | ComputeSelector,
        parameters: Mapping[str, Any] | None = None,
        component: Any = None,
        component_name: str = COMPONENT_NAME,
        component_version: str | None = None,
        component_label: str | None = "latest",
        registry: str = DEFAULT_REGISTRY,
        train_data: Any = None,
        validation_data: Any = None,
        test_data: Any = None,
        experiment_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        dataset_tag: str = "ultrachat",
        offline: bool = False,
    ) -> None:
        self.ml_client = ml_client
        self.registry_client = registry_client
        self.model = model
        self.model_version = model_version
        self.model_label = model_label
        self.allow_retired = allow_retired
        self.compute = compute
        self.parameters = dict(parameters or {})
        self.component = component
        self.component_name = component_name
        self.component_version = component_version
        self.component_label = component_label
        self.registry = registry
        self.data = {"train": train_data, "validation": validation_data, "test": test_data}
        self.experiment_name = experiment_name
        self.tags = dict(tags or {})
        self.dataset_tag = dataset_tag
        self.offline = offline
        self._live_component: Any = None

    # ------------------------------------------------------------------ plan
    def plan(self) -> FineTunePlan:
        """Check everything and build the pipeline without submitting or creating anything.

        Raises the first model/compute error; parameter problems are raised together in one
        :class:`ParameterError`. When several stages fail, the other errors are attached as
        notes (``exc.__notes__``).
        """
        return self._plan(create_compute=False)

    def _plan(self, *, create_compute: bool) -> FineTunePlan:
        warnings: list[str] = []
        errors: list[PhiFinetuneError] = []

        model = self._resolve_model(warnings)
        component, interface, report, component_id = self._resolve_component(warnings)

        compute: ComputeSelection | None = None
        try:
            compute = self._resolve_compute(model, create=create_compute)
            warnings.extend(compute.warnings)
        except PhiFinetuneError as exc:
            errors.append(exc)

        params: FineTuneParameters | None = None
        try:
            params = FineTuneParameters.build(
                self.parameters,
                interface=interface,
                model_defaults=model.model_specific_defaults,
                passthrough=set(report.added) if report else set(),
            )
            warnings.extend(params.warnings)
            if report is not None:
                self._check_report(report, params)
        except PhiFinetuneError as exc:
            errors.append(exc)

        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"also: {other}")
            raise first
        assert compute is not None and params is not None

        display = params.display_name(
            model.name, compute.gpus_per_node, compute.nodes, dataset=self.dataset_tag
        )
        experiment = self.experiment_name or f"chat_completion_{model.name}"
        data = {k: _data_text(v) for k, v in self.data.items() if v is not None}
        if "train" not in data:
            warnings.append("no training data given: the pipeline YAML shows placeholder paths")
        tags = self._run_tags(model, compute, display)
        pipeline = self._build_pipeline(
            component, model, compute, params, display, experiment, tags
        )
        pipeline_yaml = _pipeline_yaml(pipeline, component_id)
        return FineTunePlan(
            model=model,
            compute=compute,
            parameters=params,
            display_name=display,
            experiment_name=experiment,
            component_id=component_id,
            data=data,
            tags=tags,
            warnings=tuple(dict.fromkeys(warnings)),
            interface_report=report,
            pipeline_yaml=pipeline_yaml,
            offline=self.offline,
        )

    def build_pipeline(self) -> Any:
        """The azure-ai-ml ``PipelineJob`` (checks included, nothing submitted or created)."""
        plan = self.plan()
        component, *_ = self._resolve_component([])
        return self._build_pipeline(
            component,
            plan.model,
            plan.compute,
            plan.parameters,
            plan.display_name,
            plan.experiment_name,
            dict(plan.tags),
        )

    # ------------------------------------------------------------------ submit
    def submit(self) -> JobHandle:
        """Plan (creating the cluster if needed), build and submit; returns a :class:`JobHandle`."""
        if self.offline:
            raise JobError("an offline job cannot be submitted; build it without offline=True")
        if self.ml_client is None:
            raise JobError("submit needs a workspace MLClient (ml_client=...)")
        if self.data["train"] is None:
            raise JobError("submit needs training data: FineTuneJob(train_data=...)")
        plan = self._plan(create_compute=True)
        component, *_ = self._resolve_component([])
        pipeline = self._build_pipeline(
            component,
            plan.model,
            plan.compute,
            plan.parameters,
            plan.display_name,
            plan.experiment_name,
            dict(plan.tags),
        )
        try:
            job = self.ml_client.jobs.create_or_update(
                pipeline, experiment_name=plan.experiment_name
            )
        except Exception as exc:
            raise _wrap("submit the pipeline job", exc) from exc
        handle = JobHandle(self.ml_client, str(job.name), job=job)
        logger.info("submitted %s (%s): %s", job.name, plan.display_name, handle.studio_url)
        return handle

    # ------------------------------------------------------------------ internals
    def _resolve_model(self, warnings: list[str]) -> FoundationModel:
        if isinstance(self.model, FoundationModel):
            model = self.model
            warnings.extend(check_lifecycle(model, allow_retired=self.allow_retired))
            return model
        if self.registry_client is None:
            raise ConfigurationError(
                f"model {self.model!r} cannot be resolved without a registry client; pass "
                "registry_client=... or a FoundationModel (offline plans)"
            )
        model = resolve_foundation_model(
            self.registry_client,
            self.model,
            version=self.model_version,
            label=self.model_label,
            allow_retired=self.allow_retired,
            registry=self.registry,
        )
        self.model = model
        warnings.extend(model.lifecycle_warnings)
        return model

    def _resolve_component(
        self, warnings: list[str]
    ) -> tuple[Any, ComponentInterface, InterfaceReport | None, str]:
        from azure.ai.ml import load_component

        pinned = load_pinned_interface()
        component = self.component
        report: InterfaceReport | None = None
        if isinstance(component, ComponentInterface):
            interface = component
            loaded = self._load_from_interface(interface)
            return loaded, interface, None, self._registry_component_id(interface)
        if isinstance(component, str | Path):
            path = Path(component)
            if not path.is_file():
                raise ConfigurationError(
                    f"component file {path} does not exist", source=str(path), key="component"
                )
            try:
                loaded = load_component(source=str(path))
            except Exception as exc:
                raise ConfigurationError(
                    f"{path}: not a loadable component YAML: {exc}", source=str(path)
                ) from exc
            interface = interface_from_component(loaded)
            report = compare_interfaces(pinned, interface)
            if not report.identical:
                warnings.append(report.summary())
            return loaded, interface, report, self._registry_component_id(interface)
        if component is None:
            if self._live_component is None:
                if self.registry_client is None:
                    raise ConfigurationError(
                        "no component: pass registry_client=... to fetch "
                        f"{self.component_name}, or a local component YAML / interface"
                    )
                self._live_component = self._fetch_component()
            component = self._live_component
        interface = interface_from_component(component)
        report = compare_interfaces(pinned, interface)
        if not report.identical:
            warnings.append(report.summary())
        component_id = str(getattr(component, "id", "") or self._registry_component_id(interface))
        return component, interface, report, component_id

    def _fetch_component(self) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        name = self.component_name
        try:
            if self.component_version:
                return self.registry_client.components.get(name, version=self.component_version)
            return self.registry_client.components.get(name, label=self.component_label or "latest")
        except ResourceNotFoundError as exc:
            raise ConfigurationError(
                f"component {name!r} version {self.component_version} not found in registry "
                f"{self.registry!r}; check finetune.component_version",
                key="finetune.component_version",
            ) from exc
        except Exception as exc:
            if type(exc).__name__ == "ValidationException":
                raise ConfigurationError(
                    f"component {name!r} has no version with label "
                    f"{self.component_label or 'latest'!r} in registry {self.registry!r}",
                    key="finetune.component",
                ) from exc
            raise _wrap(f"get component {name!r}", exc) from exc

    def _registry_component_id(self, interface: ComponentInterface) -> str:
        return (
            f"azureml://registries/{self.registry}/components/{interface.name}/versions/"
            f"{interface.version}"
        )

    @staticmethod
    def _load_from_interface(interface: ComponentInterface) -> Any:
        import yaml  # type: ignore[import-untyped]
        from azure.ai.ml import load_component

        with tempfile.TemporaryDirectory(prefix="phi-finetune-") as folder:
            path = Path(folder) / f"{interface.name}.yaml"
            path.write_text(yaml.safe_dump(interface.to_command_component_yaml()), "utf-8")
            return load_component(source=str(path))

    def _resolve_compute(self, model: FoundationModel, *, create: bool) -> ComputeSelection:
        if isinstance(self.compute, ComputeSelection):
            return self.compute
        allow = model.finetune_allow_list
        if self.offline:
            return self.compute.plan_offline(allow_list=allow)
        selection = (
            self.compute.select(allow_list=allow) if create else self.compute.plan(allow_list=allow)
        )
        return selection

    @staticmethod
    def _check_report(report: InterfaceReport, params: FineTuneParameters) -> None:
        problems = []
        for change in report.breaking:
            if change.name in params.values and params.values[change.name].source.value in (
                "user",
                "model default",
                "reference default",
            ):
                problems.append(
                    ParameterProblem(
                        change.name,
                        params.values[change.name].value,
                        f"the live component changed this input: {change}",
                        "remove it or pin finetune.component_version to the pinned version",
                    )
                )
        if problems:
            raise ParameterError(
                f"the live component {report.live_version} is incompatible with these parameters:",
                problems=problems,
            )

    def _run_tags(
        self, model: FoundationModel, compute: ComputeSelection, display: str
    ) -> dict[str, str]:
        from phi_finetune._version import __version__

        tags = {
            "phi_finetune.version": __version__,
            "phi_finetune.model": model.id,
            "phi_finetune.model_name": model.name,
            "phi_finetune.model_version": model.version,
            "phi_finetune.compute": compute.name,
            "phi_finetune.vm_size": compute.vm_size,
            "phi_finetune.display_name": display,
        }
        tags.update({str(k): str(v) for k, v in self.tags.items()})
        return tags

    def _build_pipeline(
        self,
        component: Any,
        model: FoundationModel,
        compute: ComputeSelection,
        params: FineTuneParameters,
        display: str,
        experiment: str,
        tags: Mapping[str, str],
    ) -> Any:
        from azure.ai.ml import Input
        from azure.ai.ml.dsl import pipeline

        data_inputs = {
            f"{split}_file_path": _as_input(value or _PLACEHOLDER_DATA[split], Input)
            for split, value in self.data.items()
            if value is not None or split == "train"
        }
        kwargs = params.as_kwargs()
        for name, value in list(kwargs.items()):
            spec_type = params.values[name].type
            if spec_type in ("uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model"):
                kwargs[name] = _as_input(value, Input, type_=spec_type)
        compute_inputs = compute.component_inputs()

        @pipeline(name=display)  # type: ignore[call-overload, untyped-decorator]
        def create_pipeline() -> dict[str, Any]:
            finetune = component(
                mlflow_model_path=model.id,
                **compute_inputs,
                **data_inputs,
                **kwargs,
            )
            return {"trained_model": finetune.outputs.mlflow_model_folder}

        try:
            job = create_pipeline()
        except Exception as exc:
            raise JobError(f"building the pipeline failed: {exc}") from exc
        job.display_name = display
        job.experiment_name = experiment
        job.tags = dict(tags)
        job.settings.force_rerun = True
        job.settings.continue_on_step_failure = False
        return job


def _data_text(value: Any) -> str:
    return str(getattr(value, "path", value))


def _as_input(value: Any, input_cls: Any, *, type_: str = "uri_file") -> Any:
    if isinstance(value, input_cls):
        return value
    return input_cls(type=type_, path=str(getattr(value, "path", value)))


def _pipeline_yaml(job: Any, component_id: str) -> str:
    """The pipeline job as YAML, components shown by their registry id (compact and stable)."""
    import yaml

    try:
        data = job._to_dict()
    except Exception as exc:  # pragma: no cover - defensive: YAML is informative only
        logger.debug("pipeline YAML unavailable: %s", exc)
        return ""
    for step in (data.get("jobs") or {}).values():
        if isinstance(step, dict) and isinstance(step.get("component"), dict):
            step["component"] = component_id
    text: str = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return text


# --------------------------------------------------------------------------- handle
def _transient(exc: BaseException) -> bool:
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


def _wrap(what: str, exc: BaseException) -> PhiFinetuneError:
    if isinstance(exc, PhiFinetuneError):
        return exc
    status = getattr(exc, "status_code", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ServiceError(f"could not {what}: {text}", status=status)


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
    """A submitted pipeline job: ``status()``, ``stream()``, ``wait()``, ``cancel()``, outputs.

    Reattach after a crash with :meth:`attach`. Transient service errors while polling are
    retried (bounded, logged at DEBUG).
    """

    def __init__(
        self,
        ml_client: Any,
        name: str,
        *,
        job: Any = None,
        poll_interval: float = 15.0,
        retry_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ml_client = ml_client
        self.name = name
        self._job = job
        self.poll_interval = poll_interval
        self.retry_attempts = retry_attempts
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"JobHandle(name={self.name!r})"

    @classmethod
    def attach(cls, ml_client: Any, job_name: str, **kwargs: Any) -> JobHandle:
        """Reattach to a submitted job by name (raises :class:`JobError` when it is unknown)."""
        handle = cls(ml_client, job_name, **kwargs)
        handle.refresh()
        return handle

    # -------------------------------------------------------------- polling
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient),
            stop=tenacity.stop_after_attempt(max(1, self.retry_attempts)),
            wait=tenacity.wait_exponential(multiplier=1, max=30),
            sleep=self._sleep,
            before_sleep=lambda state: logger.debug(
                "%s failed (attempt %d), retrying: %s",
                what,
                state.attempt_number,
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )
        try:
            return retrying(fn)
        except Exception as exc:
            from azure.core.exceptions import ResourceNotFoundError

            if isinstance(exc, ResourceNotFoundError):
                raise JobError(
                    f"job {self.name!r} not found in the workspace; check the name (the studio "
                    "lists jobs under the experiment) and the workspace in your configuration"
                ) from exc
            raise _wrap(what, exc) from exc

    def refresh(self) -> Any:
        """Fetch the job from the service (retrying transient errors)."""
        self._job = self._call(f"get job {self.name!r}", lambda: self.ml_client.jobs.get(self.name))
        return self._job

    def status(self) -> str:
        return _status_text(getattr(self.refresh(), "status", None))

    @property
    def studio_url(self) -> str | None:
        job = self._job
        if job is None:
            return None
        url = getattr(job, "studio_url", None)
        if url:
            return str(url)
        services = getattr(job, "services", None) or {}
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
                if type(exc).__name__ != "JobException" and not _transient(exc):
                    raise _wrap(f"stream job {self.name!r}", exc) from exc
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

    def watch(self, *, poll_interval: float | None = None) -> Iterator[str]:
        """Yield the status at each poll until the job ends (no logs)."""
        while True:
            status = self.status()
            yield status
            if status in TERMINAL_STATUSES:
                return
            self._sleep(self.poll_interval if poll_interval is None else poll_interval)

    def wait(self, timeout: float | None = None, *, poll_interval: float | None = None) -> str:
        """Poll until the job ends; raise :class:`WaitTimeoutError` after ``timeout`` seconds.

        Shows a progress line (status and elapsed time) when progress is enabled; Ctrl-C stops
        waiting and never cancels the job.
        """
        from phi_finetune.progress import progress_bar

        interval = self.poll_interval if poll_interval is None else poll_interval
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
                        f"JobHandle.attach(ml_client, {self.name!r}).wait()"
                    )
                self._sleep(interval)
        except KeyboardInterrupt:
            logger.warning("stopped waiting for %s; the job keeps running", self.name)
            raise
        finally:
            bar.close()
        self._raise_if_failed(status)
        return status

    def cancel(self) -> str:
        """Cancel the job (nothing happens when it already ended); returns the status."""
        status = self.status()
        if status in TERMINAL_STATUSES:
            return status
        poller = self._call(
            f"cancel job {self.name!r}", lambda: self.ml_client.jobs.begin_cancel(self.name)
        )
        result = getattr(poller, "result", None)
        if callable(result):
            self._call(f"cancel job {self.name!r}", result)
        return self.status()

    # -------------------------------------------------------------- results
    def failure(self) -> tuple[str | None, str | None]:
        """``(failing child step, service message)`` of a failed job, as far as known."""
        step: str | None = None
        message: str | None = None
        try:
            children = list(self.ml_client.jobs.list(parent_job_name=self.name))
        except Exception as exc:
            logger.debug("could not list child jobs of %s: %s", self.name, exc)
            children = []
        for child in children:
            if _status_text(getattr(child, "status", None)) in _FAILED:
                step = str(getattr(child, "display_name", None) or getattr(child, "name", ""))
                message = _error_message(child)
                break
        if message is None or step is None:
            run_step, run_message = self._run_history_error()
            step = step or run_step
            message = message or run_message
        job = self._job
        if message is None and job is not None:
            message = _error_message(job)
        if step is None and job is not None:
            props = getattr(job, "properties", None) or {}
            step = props.get("azureml.failedNodeName") or props.get("failing_step")
        return step, message

    def _run_history_error(self) -> tuple[str | None, str | None]:
        """The pipeline run's error from run history (the SDK's job entities drop it)."""
        try:
            run = self.ml_client.jobs._runs_operations.get_run(self.name)
        except Exception as exc:  # best effort: private SDK surface
            logger.debug("run history of %s unavailable: %s", self.name, exc)
            return None, None
        response = getattr(run, "error", None)
        error = getattr(response, "error", None)
        message = getattr(error, "message", None)
        step = getattr(response, "component_name", None) or getattr(error, "target", None)
        return (str(step) if step else None), (str(message) if message else None)

    def _raise_if_failed(self, status: str) -> None:
        if status not in _FAILED:
            return
        step, message = self.failure()
        where = f" in step {step!r}" if step else ""
        detail = f": {message}" if message else ""
        url = self.studio_url
        raise JobFailedError(
            f"job {self.name!r} ended {status}{where}{detail}"
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
            experiment = getattr(self._job, "experiment_name", None)
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
        workspace_name = getattr(self.ml_client, "workspace_name", None)
        if not workspace_name:
            return None
        workspace = self.ml_client.workspaces.get(workspace_name)
        uri = getattr(workspace, "mlflow_tracking_uri", None)
        return str(uri) if uri else None


def _error_message(job: Any) -> str | None:
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


def _status_text(status: Any) -> str:
    """A job status as its service string (the SDK may return a ``JobStatus`` enum)."""
    if status is None:
        return "Unknown"
    return str(getattr(status, "value", status))
