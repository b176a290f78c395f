"""Steps 10-11: put model, compute, parameters and data together, check them, submit.

:class:`FineTuneJob.plan` does every check without submitting (offline with a local component YAML
or the pinned interface); :meth:`FineTuneJob.submit` returns a
:class:`~phi_finetune.azure.job.handle.JobHandle`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.boundary import is_not_found, is_service_exception, translate
from phi_finetune.azure.compute import ComputeSelection, ComputeSelector
from phi_finetune.azure.foundation_model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REGISTRY,
    FoundationModel,
    check_lifecycle,
    resolve_foundation_model,
)
from phi_finetune.azure.job.handle import JobHandle
from phi_finetune.azure.job.pipeline import (
    build_pipeline_job,
    data_text,
    load_component_from_interface,
    pipeline_yaml,
)
from phi_finetune.azure.model_rules import check_model_parameters
from phi_finetune.errors import (
    ConfigurationError,
    JobError,
    ParameterError,
    ParameterProblem,
    PhiFinetuneError,
)
from phi_finetune.interface import (
    ComponentInterface,
    InterfaceReport,
    compare_interfaces,
    interface_from_component,
    load_pinned_interface,
)
from phi_finetune.parameters import FineTuneParameters

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from phi_finetune.azure.cost import CostEstimate
    from phi_finetune.azure.deploy_size import DeploymentSizeChoice
    from phi_finetune.azure.deployment_spec import DeploymentSpec

__all__ = ["COMPONENT_NAME", "FineTuneJob", "FineTunePlan"]

logger = logging.getLogger(__name__)

COMPONENT_NAME = "chat_completion_pipeline"


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
    component_version: str | None = None
    """The component version resolved (a ``label`` is resolved once, here)."""
    pipeline: Any = attrs.field(default=None, repr=False, eq=False)
    """The azure-ai-ml ``PipelineJob`` this plan built (what :meth:`FineTuneJob.submit` sends)."""
    deployment: DeploymentSizeChoice | None = None
    """The online deployment's size and why (``None``: no deployment planned)."""
    cost: CostEstimate | None = None
    """The cost estimate (``None``: ``[cost] enabled = false``)."""

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
            "component_version": self.component_version,
            "data": dict(self.data),
            "tags": dict(self.tags),
            "effective_batch_size": self.effective_batch_size,
            "warnings": list(self.warnings),
            "interface_changes": (
                [str(c) for c in self.interface_report.changes] if self.interface_report else []
            ),
            "pipeline_yaml": self.pipeline_yaml,
            "offline": self.offline,
            "deployment": None if self.deployment is None else self.deployment.to_dict(),
            "cost": None if self.cost is None else self.cost.to_dict(),
        }

    def to_table(self) -> str:
        """A plain-text summary: model, compute, names, then every parameter with its source."""
        c = self.compute
        rows = [
            ("model", _model_text(self.model)),
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
        if self.deployment is not None:
            rows.append(("deployment", str(self.deployment)))
        rows += [(f"data.{k}", v) for k, v in self.data.items()]
        if self.cost is not None:
            rows += self.cost.table_rows()
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


def _model_text(model: FoundationModel) -> str:
    if model.source != "registry":
        return f"{model.name} ({model.source}: {model.id})"
    context = f", context {model.context_length} tokens" if model.context_length else ""
    return f"{model.name} {model.version} ({model.id}{context})"


class FineTuneJob:
    """A fine-tuning pipeline job: plan it, submit it.

    ``component`` may be a live azure-ai-ml component, a path to a local component YAML (offline
    plans), a :class:`ComponentInterface` (offline plans from the pinned interface) or ``None``
    (fetched from the registry by ``component_name`` and ``component_version``/``label``).
    ``model`` may be a :class:`FoundationModel` or a name resolved through ``registry_client``.
    ``compute`` may be a :class:`ComputeSelection` or a :class:`ComputeSelector`.
    ``deployment`` (a :class:`~phi_finetune.azure.deployment_spec.DeploymentSpec`): the plan
    also checks the vCPU quota the later online deployment needs.
    ``model_registry_client``: a client for the model's registry when it is not the
    component's (``registry_client``), e.g. ``azureml-meta``.
    also chooses (when its ``instance_type`` is ``None``) and checks the size and vCPU quota of
    the later online deployment. ``cost`` (a ``[cost]`` section,
    :class:`~phi_finetune.config.CostConfig`; ``None``: its defaults) sets the cost estimate;
    ``local_train_file`` is a local copy of the training data whose tokens it counts.
    """

    def __init__(
        self,
        *,
        ml_client: MLClient | None = None,
        registry_client: MLClient | None = None,
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
        deployment: DeploymentSpec | None = None,
        model_registry_client: MLClient | None = None,
        cost: Any = None,
        local_train_file: str | Path | None = None,
    ) -> None:
        self.ml_client = ml_client
        self.registry_client = registry_client
        self.model_registry_client = model_registry_client
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
        self.deployment = deployment
        self.cost = cost
        self.local_train_file = local_train_file
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
        deployment: DeploymentSizeChoice | None = None
        try:
            compute = self._resolve_compute(model, create=create_compute)
            warnings.extend(compute.warnings)
            if not create_compute:
                deployment = self._plan_deployment(model, warnings)
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
            warnings.extend(check_model_parameters(model, params))
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
        cost = self._estimate_cost(compute, params, deployment)

        display = params.display_name(
            model.name, compute.gpus_per_node, compute.nodes, dataset=self.dataset_tag
        )
        experiment = self.experiment_name or f"chat_completion_{model.name}"
        data = {k: data_text(v) for k, v in self.data.items() if v is not None}
        if "train" not in data:
            warnings.append("no training data given: the pipeline YAML shows placeholder paths")
        tags = self._run_tags(model, compute, display)
        pipeline = build_pipeline_job(
            component, model, compute, params, display, experiment, tags, self.data
        )
        yaml_text = pipeline_yaml(pipeline, component_id)
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
            pipeline_yaml=yaml_text,
            offline=self.offline,
            component_version=interface.version,
            pipeline=pipeline,
            deployment=deployment,
            cost=cost,
        )

    def build_pipeline(self) -> Any:
        """The azure-ai-ml ``PipelineJob`` (checks included, nothing submitted or created)."""
        return self.plan().pipeline

    # ------------------------------------------------------------------ submit
    def submit(self) -> JobHandle:
        """Plan (creating the cluster if needed), build and submit; returns a :class:`JobHandle`.

        To submit a plan made earlier exactly, pin ``model_version`` and ``component_version``
        to the versions it resolved (``plan.model.version``, ``plan.component_version``).
        """
        if self.offline:
            raise JobError("an offline job cannot be submitted; build it without offline=True")
        if self.ml_client is None:
            raise JobError("submit needs a workspace MLClient (ml_client=...)")
        if self.data["train"] is None:
            raise JobError("submit needs training data: FineTuneJob(train_data=...)")
        # One plan, one pipeline: what was checked is what is sent.
        plan = self._plan(create_compute=True)
        try:
            job = self.ml_client.jobs.create_or_update(
                plan.pipeline, experiment_name=plan.experiment_name
            )
        except Exception as exc:
            raise translate("submit the pipeline job", exc) from exc
        handle = JobHandle(self.ml_client, str(job.name), job=job)
        logger.info("submitted %s (%s): %s", job.name, plan.display_name, handle.studio_url)
        return handle

    def begin_submit(self) -> JobHandle:
        """Submit (see :meth:`submit`) and return the :class:`JobHandle` to poll: ``status()``,
        ``wait()``, ``result()``; reattach later with ``JobHandle.from_name``."""
        return self.submit()

    # ------------------------------------------------------------------ internals
    def _resolve_model(self, warnings: list[str]) -> FoundationModel:
        if isinstance(self.model, FoundationModel):
            model = self.model
            if model.source == "registry":
                warnings.extend(check_lifecycle(model, allow_retired=self.allow_retired))
            return model
        registry_client = self.model_registry_client or self.registry_client
        if registry_client is None:
            raise ConfigurationError(
                f"model {self.model!r} cannot be resolved without a registry client; pass "
                "registry_client=... or a FoundationModel (offline plans)"
            )
        model = resolve_foundation_model(
            registry_client,
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
            loaded = load_component_from_interface(interface)
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
        name = self.component_name
        client = self.registry_client
        assert client is not None  # _resolve_component checked it
        try:
            if self.component_version:
                return client.components.get(name, version=self.component_version)
            return client.components.get(name, label=self.component_label or "latest")
        except Exception as exc:
            if is_not_found(exc):
                raise ConfigurationError(
                    f"component {name!r} version {self.component_version} not found in registry "
                    f"{self.registry!r}; check finetune.component_version",
                    key="finetune.component_version",
                ) from exc
            if type(exc).__name__ == "ValidationException":
                raise ConfigurationError(
                    f"component {name!r} has no version with label "
                    f"{self.component_label or 'latest'!r} in registry {self.registry!r}",
                    key="finetune.component",
                ) from exc
            if not is_service_exception(exc):
                raise
            raise translate(f"get component {name!r}", exc) from exc

    def _registry_component_id(self, interface: ComponentInterface) -> str:
        return (
            f"azureml://registries/{self.registry}/components/{interface.name}/versions/"
            f"{interface.version}"
        )

    def _plan_deployment(
        self, model: FoundationModel, warnings: list[str]
    ) -> DeploymentSizeChoice | None:
        """The later online deployment's size (chosen from the model's inference allow list
        when ``deploy.instance_type`` is not set) and quota (instance type x count plus the
        upgrade reserve), checked in the plan so a run does not fail only after training."""
        spec = self.deployment
        if spec is None:
            return None
        from phi_finetune.azure.deploy_size import choose_deployment_size, user_deployment_size
        from phi_finetune.azure.vm_sizes import check_not_retired

        live = not self.offline and self.ml_client is not None
        selector = self.compute if isinstance(self.compute, ComputeSelector) else None
        if spec.instance_type is None:
            choice = choose_deployment_size(
                model.inference_allow_list,
                instance_count=spec.instance_count,
                ml_client=self.ml_client if live else None,
                selector=selector,
                check_quota=spec.check_quota,
            )
            warnings.extend(choice.warnings)
            if choice.source == "fallback":
                warnings.append(f"the model has no inference allow list: deploying on {choice}")
            return choice
        warnings.extend(
            check_not_retired(
                spec.instance_type,
                key="deploy.instance_type",
                what="deployment instance type",
                allow="deploy.allow_retired_size" if spec.allow_retired_size else None,
            )
        )
        checked = live and spec.check_quota
        if checked:
            from phi_finetune.azure.compute import check_deployment_quota

            assert self.ml_client is not None
            warnings.extend(
                check_deployment_quota(
                    self.ml_client, spec.instance_type, spec.instance_count, selector=selector
                )
            )
        return user_deployment_size(spec.instance_type, spec.instance_count, quota_checked=checked)

    def _estimate_cost(
        self,
        compute: ComputeSelection,
        params: FineTuneParameters,
        deployment: DeploymentSizeChoice | None,
    ) -> CostEstimate | None:
        """The cost estimate of this plan (see :mod:`phi_finetune.azure.cost`)."""
        from phi_finetune.azure.cost import PriceTable, estimate_cost, tokens_from
        from phi_finetune.config import CostConfig

        settings = self.cost if self.cost is not None else CostConfig()
        if not settings.enabled:
            return None
        prices = PriceTable.load(settings.price_file) if settings.price_file else None
        epochs_value = params.values.get("num_train_epochs")
        epochs = float(epochs_value.value) if epochs_value is not None else 1.0
        train = self.data["train"]
        tokens, token_source = tokens_from(
            settings.train_tokens,
            [self.local_train_file, None if train is None else data_text(train)],
        )
        region, region_source = settings.region, "cost.region"
        if region is None and isinstance(self.compute, ComputeSelector) and not self.offline:
            region, region_source = self.compute.location, "the workspace's region"
        return estimate_cost(
            vm_size=compute.vm_size,
            nodes=compute.nodes,
            gpus_per_node=compute.gpus_per_node,
            epochs=epochs,
            train_tokens=tokens,
            token_source=token_source,
            instance_type=None if deployment is None else deployment.instance_type,
            instance_count=1 if deployment is None else deployment.instance_count,
            region=region,
            region_source=region_source if region else "",
            prices=prices,
            tokens_per_gpu_second=settings.tokens_per_gpu_second,
            overhead_hours=settings.overhead_hours,
        )

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
            "phi_finetune.azure.compute": compute.name,
            "phi_finetune.vm_size": compute.vm_size,
            "phi_finetune.display_name": display,
        }
        tags.update({str(k): str(v) for k, v in self.tags.items()})
        return tags
