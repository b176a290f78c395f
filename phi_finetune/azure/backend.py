"""The Azure ML backend of :class:`~phi_finetune.session.FineTuneSession`.

Composes :class:`~phi_finetune.azure.workspace.Workspace`,
:class:`~phi_finetune.data.UltraChatDataset`, :class:`~phi_finetune.azure.job.FineTuneJob` (with
:class:`~phi_finetune.azure.compute.ComputeSelector`),
:class:`~phi_finetune.azure.registrar.ModelRegistrar` and
:class:`~phi_finetune.azure.deployer.EndpointDeployer`. Every resource is reported to the journal
as soon as the service accepts it, before any waiting.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phi_finetune.backends import StepContext, prepare_data_files
from phi_finetune.names import RUN_ID_TAG

if TYPE_CHECKING:
    from phi_finetune.azure.job import FineTuneJob, JobHandle
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import ResourceRecord

__all__ = ["AzureBackend"]

logger = logging.getLogger(__name__)

#: Job statuses after which resuming submits a new job instead of reattaching.
_ENDED_BADLY = frozenset({"Failed", "Canceled", "NotResponding"})


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
        self.job_timeout_s = job_timeout_s

    def workspace(self, ctx: StepContext) -> Workspace:
        if self._workspace is None:
            from phi_finetune.azure.workspace import Workspace

            self._workspace = Workspace.resolve(ctx.config.workspace)
        return self._workspace

    # -- steps ----------------------------------------------------------------------------

    def prepare_data(self, ctx: StepContext) -> dict[str, Any]:
        prepared, outputs = prepare_data_files(ctx)
        ml_client = self.workspace(ctx).ml_client
        registered = prepared.register(ml_client)
        for asset in registered.assets.values():
            ctx.created("data_asset", asset.name, version=asset.version, billable=False)
        outputs["assets"] = registered.input_paths()
        return outputs

    def _job(self, ctx: StepContext) -> FineTuneJob:
        from phi_finetune.azure.compute import ComputeSelector
        from phi_finetune.azure.job import FineTuneJob

        config = ctx.config
        workspace = self.workspace(ctx)
        assets = ctx.outputs["prepare_data"].get("assets", {})
        return FineTuneJob(
            ml_client=workspace.ml_client,
            registry_client=workspace.registry_client,
            model=config.model.name,
            model_version=config.model.version,
            model_label=config.model.label,
            allow_retired=config.model.allow_retired,
            compute=ComputeSelector.from_config(workspace.ml_client, config.compute),
            parameters=dict(config.finetune.parameters),
            component=config.finetune.interface_file,
            component_name=config.finetune.component,
            component_version=config.finetune.component_version,
            component_label=config.finetune.component_label,
            registry=config.model.registry,
            train_data=assets.get("train_file_path"),
            validation_data=assets.get("validation_file_path"),
            test_data=assets.get("test_file_path"),
            experiment_name=config.effective_experiment_name,
            tags={RUN_ID_TAG: ctx.journal.run_id},
        )

    def plan(self, ctx: StepContext) -> dict[str, Any]:
        plan = self._job(ctx).plan()
        outputs = plan.to_dict()
        outputs["table"] = plan.to_table()
        return outputs

    def fine_tune(self, ctx: StepContext) -> dict[str, Any]:
        handle = self._reattach(ctx)
        if handle is not None:
            handle.poll_interval_s = self.poll_interval_s
            logger.info("reattached to job %s instead of submitting again", handle.name)
        else:
            plan = ctx.outputs.get("plan", {})
            handle = self._job(ctx).submit()
            handle.poll_interval_s = self.poll_interval_s
            ctx.created(
                "job", handle.name, billable=True, details={"studio_url": handle.studio_url}
            )
            compute = plan.get("compute", {})
            if compute.get("will_create"):
                ctx.created("compute", str(compute.get("name")), billable=False)
        status = handle.wait(timeout=self.job_timeout_s)
        # A finished job bills nothing more: keep it in the journal, no longer billable.
        ctx.created("job", handle.name, billable=False, details={"status": status})
        return {
            "job_name": handle.name,
            "status": status,
            "studio_url": handle.studio_url,
            "trained_model": handle.trained_model_path,
        }

    def _reattach(self, ctx: StepContext) -> JobHandle | None:
        """The job an earlier attempt of this run submitted, unless it failed or was canceled.

        The journal names it; when the process died between the service accepting the job and
        the journal write, the job is found by its ``phi_finetune.run_id`` tag.
        """
        from phi_finetune.azure.job import JobHandle

        ml_client = self.workspace(ctx).ml_client
        existing = [r for r in ctx.existing("job") if r.details.get("status") not in _ENDED_BADLY]
        name = existing[-1].name if existing else None
        step = ctx.journal.get_step("fine_tune")
        if name is None and step is not None and step.attempts > 1:
            name = self._find_job_of_run(ml_client, ctx.journal.run_id)
            if name is not None:
                ctx.created("job", name, billable=True)
        if name is None:
            return None
        handle = JobHandle.from_name(ml_client, name)
        status = handle.status()
        if status in _ENDED_BADLY:
            logger.info("job %s of an earlier attempt is %s; submitting a new one", name, status)
            ctx.created("job", name, billable=False, details={"status": status})
            return None
        return handle

    @staticmethod
    def _find_job_of_run(ml_client: Any, run_id: str, *, limit: int = 200) -> str | None:
        """The newest job tagged with ``run_id`` among the workspace's ``limit`` newest jobs."""
        try:
            for job in itertools.islice(ml_client.jobs.list(), limit):
                if (getattr(job, "tags", None) or {}).get(RUN_ID_TAG) == run_id:
                    return str(job.name)
        except Exception as exc:  # the lookup is a best effort; submitting is the fallback
            logger.warning("could not list jobs to find run %s's job: %s", run_id, exc)
        return None

    def register(self, ctx: StepContext) -> dict[str, Any]:
        from phi_finetune.azure.registrar import ModelRegistrar

        config = ctx.config
        plan = ctx.outputs.get("plan", {})
        registrar = ModelRegistrar(
            self.workspace(ctx).ml_client,
            on_created=lambda kind, name, version: ctx.created(kind, name, version=version),
        )
        model = registrar.register(
            ctx.outputs["fine_tune"]["job_name"],
            base_model=str(plan.get("model", {}).get("name") or config.model.name),
            name=config.deploy.model_name,
            version=config.deploy.model_version,
            data_hashes=ctx.outputs["prepare_data"].get("sha256"),
            parameters={k: v.get("value") for k, v in plan.get("parameters", {}).items()}
            if isinstance(plan.get("parameters"), dict)
            else None,
            run_id=ctx.journal.run_id,
        )
        return model.to_dict()

    def deploy(self, ctx: StepContext) -> Endpoint:
        from phi_finetune.azure.deployer import EndpointDeployer

        deploy = ctx.config.deploy
        plan = ctx.outputs.get("plan", {})
        reg = ctx.outputs["register"]
        # A crash after the endpoint was created: finish that endpoint instead of a second one.
        earlier = ctx.existing("endpoint")
        deployer = EndpointDeployer(
            self.workspace(ctx).ml_client,
            wait_timeout_s=deploy.wait_timeout_s,
            poll_interval_s=self.poll_interval_s,
        )
        endpoint = deployer.deploy(
            reg.get("asset_id") or reg["id"],
            endpoint_name=earlier[-1].name if earlier else deploy.endpoint_name,
            deployment_name=deploy.deployment_name,
            instance_type=deploy.instance_type,
            instance_count=deploy.instance_count,
            inference_allow_list=plan.get("model", {}).get("inference_allow_list"),
            liveness_initial_delay=deploy.liveness_initial_delay,
            request_timeout_ms=deploy.request_timeout_ms,
            reuse_endpoint=bool(earlier),
            run_id=ctx.journal.run_id,
            # Journaled before the create request: a kill while it is in flight still leaves
            # the (possibly created) endpoint's name in the journal.
            on_creating=lambda kind, name: ctx.journal.record_resource(
                kind, name, billable=True, state="creating"
            ),
            on_created=lambda kind, name: ctx.created(kind, name, billable=True),
            on_deleted=_journal_deleted(ctx),
        )
        # A reused endpoint or deployment (left "creating" by a killed attempt) gets no
        # on_created call from the deployer: record that both exist now.
        ctx.created("endpoint", endpoint.name, billable=True)
        ctx.created("deployment", endpoint.deployment_name or deploy.deployment_name, billable=True)
        return endpoint

    def endpoint(self, ctx: StepContext) -> Endpoint | None:
        deployed = ctx.outputs.get("deploy")
        alive = ctx.existing("endpoint")
        if not deployed or not alive:
            return None
        from phi_finetune.endpoint import Endpoint as AzureEndpoint

        return AzureEndpoint.from_name(
            self.workspace(ctx).ml_client,
            deployed["endpoint_name"],
            deployment_name=deployed.get("deployment_name"),
            on_deleted=_journal_deleted(ctx),
        )

    def delete_resource(self, ctx: StepContext, resource: ResourceRecord) -> None:
        ml_client = self.workspace(ctx).ml_client
        if resource.kind == "endpoint":
            from phi_finetune.azure.deployer import EndpointDeployer

            EndpointDeployer(ml_client).delete(resource.name)
        elif resource.kind == "job":
            from phi_finetune.azure.job import JobHandle

            JobHandle(ml_client, resource.name).cancel()
        # Deployments go with their endpoint; computes scale to zero and are left to the user.


def _journal_deleted(ctx: StepContext) -> Callable[[str, str], None]:
    """An ``on_deleted`` callback recording deletions in the run's journal; deleting an endpoint
    deletes its deployments, so they are recorded deleted with it."""

    def deleted(kind: str, name: str) -> None:
        ctx.journal.mark_deleted(kind, name)
        if kind == "endpoint":
            for deployment in ctx.existing("deployment"):
                ctx.journal.mark_deleted("deployment", deployment.name)

    return deleted
