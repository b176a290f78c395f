"""The Azure ML backend of :class:`~phi_finetune.session.FineTuneSession`.

Composes :class:`~phi_finetune.azure.workspace.Workspace`,
:class:`~phi_finetune.data.UltraChatDataset`, :class:`~phi_finetune.azure.job.FineTuneJob` (with
:class:`~phi_finetune.azure.compute.ComputeSelector`),
:class:`~phi_finetune.azure.registrar.ModelRegistrar` and
:class:`~phi_finetune.azure.deployer.EndpointDeployer`. Every resource is reported to the step's
:class:`~phi_finetune.backends.ResourceObserver` as soon as the service accepts it, before any
waiting. ``fine_tune`` submits the journaled plan: the model and component versions the plan
resolved are pinned, so ``label="latest"`` is not resolved a second time.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.backends import StepContext, prepare_data_files
from phi_finetune.names import RUN_ID_TAG
from phi_finetune.steps import (
    JobRecord,
    ModelRef,
    PlannedCompute,
    PlannedModel,
    PlanParameter,
    PlanRecord,
    PreparedDataRecord,
)

if TYPE_CHECKING:
    from phi_finetune.azure.job import FineTuneJob, FineTunePlan, JobHandle
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import ResourceRecord

__all__ = ["AzureBackend"]

logger = logging.getLogger(__name__)

#: Job statuses after which resuming submits a new job instead of reattaching.
_ENDED_BADLY = frozenset({"Failed", "Canceled", "NotResponding"})
#: Prefix of the data asset names (``ultrachat-train``, ...).
_DATA_PREFIX = "ultrachat"
#: Details key of a job journaled before its submit request: the tags that find it.
_INTENT_TAG = "find_by_tags"


def _job_intent_name(run_id: str) -> str:
    """The journal name of the job run ``run_id`` is submitting, before the service names it."""
    return f"{RUN_ID_TAG}={run_id}"


def _is_job_intent(resource: ResourceRecord) -> bool:
    """Whether ``resource`` is a job journaled before its submit request (name not known)."""
    return resource.kind == "job" and _INTENT_TAG in resource.details


def _resolve_intent(ctx: StepContext, intent: str) -> None:
    """The intent stands for nothing more: the job (if any) is journaled by its name now."""
    ctx.observer.created("job", intent, billable=False, details={"resolved": True})
    ctx.observer.deleted("job", intent)


def _status_text(status: Any) -> str:
    return str(getattr(status, "value", status) or "Unknown")


class AzureBackend:
    """Runs each step against an Azure ML workspace.

    ``workspace`` defaults to :meth:`Workspace.resolve` on the run configuration's
    ``[workspace]``; ``poll_interval_s`` is how often jobs and deployments are polled.
    """

    name = "azure"

    def __init__(
        self,
        *,
        workspace: Workspace | None = None,
        poll_interval_s: float = 15.0,
        job_timeout_s: float | None = None,
    ) -> None:
        self._workspace = workspace
        self.poll_interval_s = poll_interval_s
        # Job name -> the entity fine_tune last read in this process (the registrar's check).
        self._finished_jobs: dict[str, Any] = {}
        # (config, run id, data inputs, plan record, job) of the last plan() in this process.
        self._planned_job: tuple[Any, str, dict[str, Any], PlanRecord, FineTuneJob] | None = None
        self.job_timeout_s = job_timeout_s

    def workspace(self, ctx: StepContext) -> Workspace:
        if self._workspace is None:
            from phi_finetune.azure.workspace import Workspace

            self._workspace = Workspace.resolve(ctx.config.workspace)
        return self._workspace

    # -- steps ----------------------------------------------------------------------------

    def prepare_data(self, ctx: StepContext) -> PreparedDataRecord:
        from phi_finetune.azure.data_assets import (
            PIPELINE_INPUTS,
            RegisteredData,
            asset_version,
            register_file,
        )

        prepared, record = prepare_data_files(ctx)
        ml_client = self.workspace(ctx).ml_client
        # Only the job's inputs become data assets: the test_gen file is read locally, for
        # scoring samples, and uploading it would cost seven requests for nothing.
        files = {r: p for r, p in prepared.files().items() if r in PIPELINE_INPUTS}
        names = {role: f"{_DATA_PREFIX}-{role.replace('_', '-')}" for role in files}
        # Intent before action: names and versions are deterministic (prefix-role, content hash).
        for role in files:
            ctx.observer.creating(
                "data_asset", names[role], asset_version(prepared.sha256[role]), billable=False
            )
        registered = RegisteredData(
            assets={
                role: register_file(
                    ml_client,
                    path,
                    role=role,
                    name=names[role],
                    sha256=prepared.sha256[role],
                    tags={"rows": str(prepared.counts[role]), "role": role},
                )
                for role, path in files.items()
            }
        )
        for asset in registered.assets.values():
            ctx.observer.created("data_asset", asset.name, str(asset.version), billable=False)
        return attrs.evolve(record, assets=registered.input_paths())

    def _job(self, ctx: StepContext, *, pinned: PlanRecord | None = None) -> FineTuneJob:
        """The job the config describes; with ``pinned``, at the model and component versions
        that plan resolved."""
        from phi_finetune.azure.compute import ComputeSelector
        from phi_finetune.azure.job import FineTuneJob
        from phi_finetune.azure.model_source import model_from_source

        config = ctx.config
        workspace = self.workspace(ctx)
        assets = ctx.prepared.assets
        model_version = config.model.version
        component_version = config.finetune.component_version
        if pinned is not None:
            model_version = pinned.model.version or model_version
            if config.finetune.interface_file is None:
                component_version = pinned.component_version or component_version
        kind, value = config.model.source
        return FineTuneJob(
            ml_client=workspace.ml_client,
            registry_client=workspace.registry_client,
            model_registry_client=workspace.registry_client_for(config.model.registry)
            if kind == "registry"
            else None,
            model=config.model.name if kind == "registry" else model_from_source(kind, value),
            model_version=model_version,
            model_label=config.model.label,
            allow_retired=config.model.allow_retired,
            compute=ComputeSelector.from_config(workspace.ml_client, config.compute),
            parameters=dict(config.finetune.parameters),
            component=config.finetune.interface_file,
            component_name=config.finetune.component,
            component_version=component_version,
            component_label=config.finetune.component_label,
            registry=config.model.registry,
            train_data=assets.get("train_file_path"),
            validation_data=assets.get("validation_file_path"),
            test_data=assets.get("test_file_path"),
            experiment_name=config.effective_experiment_name,
            tags={RUN_ID_TAG: ctx.journal.run_id},
            # The plan also chooses and checks the later online deployment's size and quota.
            deployment=_deployment_for_plan(config),
            cost=config.cost,
            local_train_file=ctx.prepared.files.get("train"),
        )

    def plan(self, ctx: StepContext) -> PlanRecord:
        job = self._job(ctx)
        record = plan_record(job.plan())
        # The job keeps what plan() resolved (model, component, compute facts), so fine_tune in
        # this process submits it instead of reading them all again.
        self._planned_job = (ctx.config, ctx.journal.run_id, dict(ctx.prepared.assets), record, job)
        return record

    def _job_to_submit(self, ctx: StepContext, planned: PlanRecord) -> FineTuneJob:
        """The job plan() built in this process when it planned exactly ``planned`` for the
        same config, run and data; else a new job pinned to ``planned``'s versions."""
        cached, self._planned_job = self._planned_job, None
        if cached is not None:
            config, run_id, assets, record, job = cached
            if (
                config is ctx.config
                and run_id == ctx.journal.run_id
                and assets == dict(ctx.prepared.assets)
                and record.model.version == planned.model.version
                and record.component_version == planned.component_version
            ):
                return job
        return self._job(ctx, pinned=planned)

    def fine_tune(self, ctx: StepContext) -> JobRecord:
        handle = self._reattach(ctx)
        if handle is not None:
            handle.poll_interval_s = self.poll_interval_s
            logger.info("reattached to job %s instead of submitting again", handle.name)
        else:
            planned = ctx.plan
            run_id = ctx.journal.run_id
            # Intent before action: the service names the job, so the journal holds the tag
            # that finds it; a lost reply or a kill during the request leaves it findable.
            intent = _job_intent_name(run_id)
            ctx.observer.creating(
                "job", intent, billable=True, details={_INTENT_TAG: {RUN_ID_TAG: run_id}}
            )
            if planned.compute is not None and planned.compute.will_create:
                ctx.observer.creating("compute", planned.compute.name, billable=False)
            handle = self._job_to_submit(ctx, planned).submit()
            handle.poll_interval_s = self.poll_interval_s
            ctx.observer.created(
                "job", handle.name, billable=True, details={"studio_url": handle.studio_url}
            )
            _resolve_intent(ctx, intent)
            if planned.compute is not None and planned.compute.will_create:
                ctx.observer.created("compute", planned.compute.name, billable=False)
        status = handle.wait(timeout=self.job_timeout_s)
        if handle._job is not None:
            self._finished_jobs[handle.name] = handle._job
        # A finished job bills nothing more: keep it in the journal, no longer billable.
        ctx.observer.created("job", handle.name, billable=False, details={"status": status})
        return JobRecord(
            name=handle.name,
            status=status,
            studio_url=handle.studio_url,
            trained_model=handle.trained_model_path,
        )

    def _reattach(self, ctx: StepContext) -> JobHandle | None:
        """The job an earlier attempt of this run submitted, unless it failed or was canceled.

        The journal names it; when the reply of the submit request was lost or the process
        died before the journal write, the job is found by its ``phi_finetune.run_id`` tag.
        """
        from phi_finetune.azure.job import JobHandle

        ml_client = self.workspace(ctx).ml_client
        named = [
            r
            for r in ctx.existing("job")
            if not _is_job_intent(r) and r.details.get("status") not in _ENDED_BADLY
        ]
        name = named[-1].name if named else None
        pending = any(_is_job_intent(r) for r in ctx.existing("job"))
        step = ctx.journal.get_step("fine_tune")
        if pending or (name is None and step is not None and step.attempts > 1):
            # With an intent journaled, a failed lookup must not lead to a second job.
            found = self._reconcile_jobs(ctx, strict=pending)
            if name is None:
                name = next((n for n, status in found if status not in _ENDED_BADLY), None)
        if name is None:
            return None
        handle = JobHandle.from_name(ml_client, name)
        status = handle.status()
        if status in _ENDED_BADLY:
            logger.info("job %s of an earlier attempt is %s; submitting a new one", name, status)
            ctx.observer.created("job", name, billable=False, details={"status": status})
            return None
        return handle

    def reconcile(self, ctx: StepContext) -> None:
        """Resolve jobs journaled as "creating" (submit reply lost) by their run tag: each job
        found is journaled by name (billable while it has not ended), the intent is cleared.
        :class:`~phi_finetune.errors.JobError` when the workspace's jobs cannot be listed."""
        if any(_is_job_intent(r) for r in ctx.existing("job")):
            self._reconcile_jobs(ctx, strict=True)

    def _reconcile_jobs(self, ctx: StepContext, *, strict: bool) -> list[tuple[str, str]]:
        from phi_finetune.azure.job.handle import TERMINAL_STATUSES

        run_id = ctx.journal.run_id
        found = self._jobs_of_run(self.workspace(ctx).ml_client, run_id, strict=strict)
        for job_name, status in found:
            ctx.observer.created(
                "job",
                job_name,
                billable=status not in TERMINAL_STATUSES,
                details={"status": status, "found_by_tag": True},
            )
            logger.info("run %s: found its job %s (%s) by its tag", run_id, job_name, status)
        for intent in [r for r in ctx.existing("job") if _is_job_intent(r)]:
            _resolve_intent(ctx, intent.name)
        return found

    @staticmethod
    def _jobs_of_run(
        ml_client: Any, run_id: str, *, strict: bool, limit: int = 200
    ) -> list[tuple[str, str]]:
        """``(name, status)`` of the jobs tagged with ``run_id`` among the workspace's
        ``limit`` newest. ``strict``: a failed lookup raises instead of finding nothing."""
        from phi_finetune.errors import JobError

        found: list[tuple[str, str]] = []
        try:
            for job in itertools.islice(ml_client.jobs.list(), limit):
                if (getattr(job, "tags", None) or {}).get(RUN_ID_TAG) == run_id:
                    found.append((str(job.name), _status_text(getattr(job, "status", None))))
        except Exception as exc:
            if strict:
                raise JobError(
                    f"could not list the workspace's jobs to find the job run {run_id} may have "
                    f"submitted (tag {RUN_ID_TAG}={run_id}): {type(exc).__name__}: {exc}. It "
                    f"may be running: retry once the workspace answers (`phi-finetune resume "
                    f"{run_id}` or `phi-finetune teardown {run_id}`), or cancel it in the Azure "
                    "ML studio"
                ) from exc
            logger.warning("could not list jobs to find run %s's job: %s", run_id, exc)
        return found

    @classmethod
    def _find_job_of_run(cls, ml_client: Any, run_id: str, *, limit: int = 200) -> str | None:
        """The first job tagged with ``run_id`` among the workspace's ``limit`` newest jobs."""
        found = cls._jobs_of_run(ml_client, run_id, strict=False, limit=limit)
        return found[0][0] if found else None

    def register(self, ctx: StepContext) -> ModelRef:
        from phi_finetune.azure.registrar import ModelRegistrar

        config = ctx.config
        plan = ctx.plan
        # A job that ended during this process's fine_tune is not read again.
        registrar = ModelRegistrar(
            self.workspace(ctx).ml_client,
            observer=ctx.observer,
            known_jobs={n: j for n, j in self._finished_jobs.items() if n == ctx.job.name},
        )
        model = registrar.register(
            ctx.job.name,
            base_model=plan.model.name or config.model.name,
            name=config.deploy.model_name,
            version=config.deploy.model_version,
            data_hashes=ctx.prepared.sha256,
            parameters=plan.parameter_values or None,
            run_id=ctx.journal.run_id,
        )
        return ModelRef(
            name=model.name,
            version=model.version,
            uri=model.asset_id,
            id=model.id,
            created=model.created,
        )

    def deploy(self, ctx: StepContext) -> Endpoint:
        from phi_finetune.azure.deployer import EndpointDeployer
        from phi_finetune.azure.deployment_spec import DeploymentSpec

        deploy = ctx.config.deploy
        # A crash after the endpoint was created: finish that endpoint instead of a second one.
        earlier = ctx.existing("endpoint")
        observer = ctx.observer
        spec = DeploymentSpec.from_config(
            deploy,
            inference_allow_list=ctx.plan.model.inference_allow_list,
            endpoint_name=earlier[-1].name if earlier else None,
            check_quota=ctx.config.compute.check_quota,
        )
        if spec.instance_type is None:
            # The size the plan chose (and journaled) from the allow list and the quota.
            planned = ctx.plan.details.get("deployment") or {}
            if planned.get("instance_type"):
                spec = attrs.evolve(spec, instance_type=str(planned["instance_type"]))
        deployer = EndpointDeployer(
            self.workspace(ctx).ml_client,
            wait_timeout_s=deploy.wait_timeout_s,
            poll_interval_s=self.poll_interval_s,
        )
        endpoint = deployer.deploy(
            ctx.model.uri,
            spec,
            reuse_endpoint=bool(earlier),
            run_id=ctx.journal.run_id,
            # ``creating`` is journaled before the create request: a kill while it is in
            # flight still leaves the (possibly created) endpoint's name in the journal.
            observer=observer,
        )
        # A reused endpoint or deployment (left "creating" by a killed attempt) gets no
        # created call from the deployer: record that both exist now.
        observer.created("endpoint", endpoint.name, billable=True)
        observer.created(
            "deployment", endpoint.deployment_name or deploy.deployment_name, billable=True
        )
        return endpoint

    def endpoint(self, ctx: StepContext) -> Endpoint | None:
        deployed = ctx.deployment
        if deployed is None or not ctx.existing("endpoint"):
            return None
        from phi_finetune.azure.rollout import current_deployment
        from phi_finetune.endpoint import Endpoint as AzureEndpoint

        return AzureEndpoint.from_name(
            self.workspace(ctx).ml_client,
            deployed.endpoint_name,
            # A finished rollout moved the endpoint to its new deployment.
            deployment_name=current_deployment(ctx.journal, deployed.deployment_name),
            observer=ctx.observer,
        )

    def delete_resource(self, ctx: StepContext, resource: ResourceRecord) -> None:
        ml_client = self.workspace(ctx).ml_client
        if resource.kind == "endpoint":
            from phi_finetune.azure.deployer import EndpointDeployer

            EndpointDeployer(ml_client).delete(resource.name)
        elif resource.kind == "job" and _is_job_intent(resource):
            # Teardown's reconcile could not look the job up: try once more, cancel what it finds.
            from phi_finetune.azure.job import JobHandle

            for job_name, _ in self._reconcile_jobs(ctx, strict=True):
                job = ctx.journal.resource("job", job_name)
                if job is not None and job.billable and job.alive:
                    JobHandle(ml_client, job_name).cancel()
                    ctx.journal.mark_deleted("job", job_name)
        elif resource.kind == "job":
            from phi_finetune.azure.job import JobHandle

            JobHandle(ml_client, resource.name).cancel()
        # Deployments go with their endpoint; computes scale to zero and are left to the user.


def _deployment_for_plan(config: Any) -> Any:
    """The ``[deploy]`` spec whose size and quota a plan checks (``None``: no deploying)."""
    if not config.deploy.enabled:
        return None
    from phi_finetune.azure.deployment_spec import DeploymentSpec

    return DeploymentSpec.from_config(config.deploy, check_quota=config.compute.check_quota)


def plan_record(plan: FineTunePlan) -> PlanRecord:
    """The journaled record of an Azure :class:`~phi_finetune.azure.job.FineTunePlan`: the
    model and component versions it resolved, compute, parameters, names and the table."""
    full = plan.to_dict()
    model, compute = plan.model, plan.compute
    typed = ("model", "compute", "parameters", "display_name", "experiment_name", "warnings")
    return PlanRecord(
        model=PlannedModel(
            name=model.name,
            version=str(model.version),
            id=model.id,
            inference_allow_list=(
                tuple(model.inference_allow_list) if model.inference_allow_list else None
            ),
        ),
        component_id=plan.component_id,
        component_version=plan.component_version,
        compute=PlannedCompute(
            name=compute.name,
            vm_size=compute.vm_size,
            gpus_per_node=compute.gpus_per_node,
            nodes=compute.nodes,
            will_create=compute.will_create,
        ),
        parameters={
            name: PlanParameter(v.value, str(v.source), v.type)
            for name, v in sorted(plan.parameters.values.items())
        },
        display_name=plan.display_name,
        experiment_name=plan.experiment_name,
        warnings=tuple(plan.warnings),
        table=plan.to_table(),
        details={
            **{k: v for k, v in full.items() if k not in typed and not k.startswith("component_")},
            "model": full["model"],
            "compute": full["compute"],
        },
    )
