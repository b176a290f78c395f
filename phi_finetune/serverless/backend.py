"""The serverless ("models as a service") backend of
:class:`~phi_finetune.session.FineTuneSession`.

Same steps and journal guarantees as the Azure backend, no GPU quota: the data is uploaded as
data assets (train and validation, the latter carved from the training split when the data has
none); ``fine_tune`` submits ``create_finetuning_job`` under a deterministic name (journaled
``creating`` before the request, so a resume finds it with one GET); the job registers the model
itself, so ``register`` only reads its name back; ``deploy`` subscribes to the model's
marketplace offer when it needs one and creates a serverless endpoint (journaled before the
request, reattached by name). Teardown deletes the endpoint and, with ``[serverless]
delete_marketplace_subscription``, the subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.backends import StepContext, prepare_data_files
from phi_finetune.errors import ConfigurationError
from phi_finetune.names import RUN_ID_TAG
from phi_finetune.serverless.endpoint import SUBSCRIPTION_KIND
from phi_finetune.steps import JobRecord, ModelRef, PlanRecord, PreparedDataRecord

if TYPE_CHECKING:
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import ResourceRecord

__all__ = ["DEFAULT_VALIDATION_PC", "ServerlessBackend"]

logger = logging.getLogger(__name__)

#: Share of the training split carved off as validation data when the data has none.
DEFAULT_VALIDATION_PC = 10.0
_DATA_PREFIX = "ultrachat"
_ROLES = ("train", "validation")


class ServerlessBackend:
    """Runs each step as a serverless fine-tuning job and a serverless endpoint.

    ``workspace`` defaults to :meth:`Workspace.resolve` on ``[workspace]``; ``offline=True``
    plans from the pinned facts without reading the registry or the workspace.
    """

    name = "serverless"

    def __init__(
        self,
        *,
        workspace: Workspace | None = None,
        poll_interval_s: float = 30.0,
        job_timeout_s: float | None = None,
        offline_plan: bool = False,
        endpoint_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._workspace = workspace
        # Keyword arguments for each ServerlessEndpointHandle (timeout_s, session, ...).
        self.endpoint_options = dict(endpoint_options or {})
        self.poll_interval_s = poll_interval_s
        self.job_timeout_s = job_timeout_s
        self.offline_plan = offline_plan

    def workspace(self, ctx: StepContext) -> Workspace:
        if self._workspace is None:
            from phi_finetune.azure.workspace import Workspace

            self._workspace = Workspace.resolve(ctx.config.workspace)
        return self._workspace

    # -- prepare_data -------------------------------------------------------------------

    def prepare_data(self, ctx: StepContext) -> PreparedDataRecord:
        from phi_finetune.azure.data_assets import PIPELINE_INPUTS, asset_version, register_file

        record = _prepare_with_validation(ctx)
        files = {r: Path(p) for r, p in record.files.items() if r in _ROLES}
        from phi_finetune.serverless.plan import _check_data

        _check_data(record)  # without both splits the job cannot run: fail before uploading
        ml_client = self.workspace(ctx).ml_client
        names = {role: f"{_DATA_PREFIX}-{role}" for role in files}
        for role in files:
            ctx.observer.creating(
                "data_asset", names[role], asset_version(record.sha256[role]), billable=False
            )
        assets: dict[str, str] = {}
        for role, path in files.items():
            asset = register_file(
                ml_client,
                path,
                role=role,
                name=names[role],
                sha256=record.sha256[role],
                tags={"rows": str(record.counts[role]), "role": role},
            )
            ctx.observer.created("data_asset", asset.name, str(asset.version), billable=False)
            assets[PIPELINE_INPUTS[role]] = asset.uri
        return attrs.evolve(record, assets=assets)

    # -- plan -----------------------------------------------------------------------------

    def plan(self, ctx: StepContext) -> PlanRecord:
        from phi_finetune.serverless.plan import plan_serverless

        model = workspace = None
        if not self.offline_plan:
            from phi_finetune.serverless.plan import online_facts

            model, workspace = online_facts(ctx.config, self.workspace(ctx))
        return plan_serverless(
            ctx.config, ctx.prepared, run_id=ctx.journal.run_id, model=model, workspace=workspace
        )

    # -- fine_tune ------------------------------------------------------------------------

    def fine_tune(self, ctx: StepContext) -> JobRecord:
        from phi_finetune.serverless.job import (
            ENDED_BADLY,
            build_job,
            get_job,
            job_status,
            submit_job,
            wait_job,
        )
        from phi_finetune.serverless.plan import parameters_for_job

        ml_client = self.workspace(ctx).ml_client
        plan = ctx.plan
        details = dict(plan.details.get("serverless") or {})
        ended = [r for r in ctx.existing("job") if r.details.get("status") in ENDED_BADLY]
        # Attempt n after n-1 failed jobs: the name stays deterministic for a resume.
        base = str(details.get("job_name") or f"phift-{ctx.journal.run_id}")
        name = base if not ended else f"{base}-{len(ended) + 1}"
        found = get_job(ml_client, name)
        if found is not None and job_status(found) in ENDED_BADLY:
            ctx.observer.created("job", name, billable=False, details={"status": job_status(found)})
            name = f"{base}-{len(ended) + 2}"
            found = get_job(ml_client, name)
        if found is None:
            assets = ctx.prepared.assets
            job = build_job(
                name=name,
                model_id=self._model_id(ctx, plan),
                training_data=assets["train_file_path"],
                validation_data=assets.get("validation_file_path", ""),
                output_model_name=str(details["output_model_name"]),
                hyperparameters=parameters_for_job(plan.parameters),
                run_id=ctx.journal.run_id,
                experiment_name=plan.experiment_name,
                compute=details.get("compute"),
                instance_types=tuple(details.get("instance_types") or ()),
                job_tier=details.get("job_tier"),
            )
            # Intent before action: the name is ours, so the journal can hold it already.
            ctx.observer.creating("job", name, billable=True)
            created = submit_job(ml_client, job)
            studio = getattr(created, "studio_url", None)
            ctx.observer.created("job", name, billable=True, details={"studio_url": studio})
        else:
            logger.info("reattached to job %s instead of submitting again", name)
            ctx.observer.created("job", name, billable=True)
        from phi_finetune.errors import JobFailedError

        try:
            finished = wait_job(
                ml_client, name, poll_interval_s=self.poll_interval_s, timeout_s=self.job_timeout_s
            )
        except JobFailedError as exc:
            # An ended job bills nothing: journal it so, and so the next attempt takes a new name.
            ctx.observer.created("job", name, billable=False, details={"status": exc.status})
            raise
        ctx.observer.created("job", name, billable=False, details={"status": "Completed"})
        from phi_finetune.serverless.job import registered_model_name

        return JobRecord(
            name=name,
            status="Completed",
            studio_url=getattr(finished, "studio_url", None),
            trained_model=registered_model_name(finished, str(details["output_model_name"])),
        )

    def _model_id(self, ctx: StepContext, plan: PlanRecord) -> str:
        if plan.model.id:
            return plan.model.id
        config = ctx.config
        version = plan.model.version or config.model.version
        if version:
            return f"{_registry_path(config.model.registry, plan.model.name)}/versions/{version}"
        return f"{_registry_path(config.model.registry, plan.model.name)}/labels/latest"

    # -- register -------------------------------------------------------------------------

    def register(self, ctx: StepContext) -> ModelRef:
        """The model the job registered (its ``registered_model`` output); no second
        registration. The version is the newest of that name."""
        from phi_finetune.azure.boundary import call

        ml_client = self.workspace(ctx).ml_client
        name = ctx.job.trained_model or str(ctx.plan.details["serverless"]["output_model_name"])
        versions = call(
            f"list the versions of model {name!r} the job {ctx.job.name} registered",
            lambda: list(ml_client.models.list(name=name)),
        )
        if not versions:
            from phi_finetune.errors import ModelNotFoundError

            raise ModelNotFoundError(
                f"job {ctx.job.name} completed but model {name!r} is not registered in the "
                "workspace; check the job's outputs in the Azure ML studio"
            )
        model = max(versions, key=lambda m: _version_key(str(m.version)))
        ctx.observer.created("model", str(model.name), str(model.version), billable=False)
        return ModelRef(
            name=str(model.name),
            version=str(model.version),
            uri=f"azureml:{model.name}:{model.version}",
            id=getattr(model, "id", None),
            created=True,
        )

    # -- deploy ---------------------------------------------------------------------------

    def deploy(self, ctx: StepContext) -> Endpoint:
        from phi_finetune.serverless.endpoint import (
            ServerlessEndpointHandle,
            create_endpoint,
            get_endpoint,
            subscribe,
            wait_endpoint,
            workspace_model_id,
        )
        from phi_finetune.serverless.plan import WorkspaceFacts

        ml_client = self.workspace(ctx).ml_client
        details = dict(ctx.plan.details.get("serverless") or {})
        if details.get("marketplace_subscription"):
            self._subscribe(ctx, details, subscribe)
        facts = WorkspaceFacts.read(ml_client)
        if not facts.location or not facts.workspace_id:
            raise ConfigurationError(
                "could not read the workspace's region and id, which the fine-tuned model's id "
                "needs; check [workspace] and the workspace's access"
            )
        model = ctx.model
        model_id = workspace_model_id(facts.location, facts.workspace_id, model.name, model.version)
        name = str(details["endpoint_name"])
        timeout = ctx.config.serverless.wait_timeout_s
        existing = get_endpoint(ml_client, name)
        if existing is None:
            ctx.observer.creating("endpoint", name, billable=True, details={"model_id": model_id})
            entity = create_endpoint(
                ml_client,
                name,
                model_id,
                location=facts.location,
                tags={RUN_ID_TAG: ctx.journal.run_id, "created_by": "phi_finetune"},
                timeout_s=timeout,
            )
        else:
            logger.info("reattached to serverless endpoint %s", name)
            entity = wait_endpoint(
                ml_client, name, timeout_s=timeout, poll_interval_s=self.poll_interval_s
            )
        ctx.observer.created(
            "endpoint",
            name,
            billable=True,
            details={"scoring_uri": entity.scoring_uri, "model_id": model_id},
        )
        return ServerlessEndpointHandle.from_serverless(
            ml_client, name, observer=ctx.observer, **self.endpoint_options
        )

    def _subscribe(self, ctx: StepContext, details: dict[str, Any], subscribe: Any) -> None:
        name = _subscription_name(ctx.plan.model.name)
        if any(r.name == name and r.state == "created" for r in ctx.existing(SUBSCRIPTION_KIND)):
            return
        # Not billable by itself (the endpoint's use is billed through it); teardown deletes
        # it only when asked (delete_marketplace_subscription).
        ctx.observer.creating(SUBSCRIPTION_KIND, name, billable=False)
        subscribe(self.workspace(ctx).ml_client, name, self._model_id(ctx, ctx.plan))
        ctx.observer.created(SUBSCRIPTION_KIND, name, billable=False)

    def endpoint(self, ctx: StepContext) -> Endpoint | None:
        deployed = ctx.deployment
        if deployed is None or not ctx.existing("endpoint"):
            return None
        from phi_finetune.serverless.endpoint import ServerlessEndpointHandle

        return ServerlessEndpointHandle.from_serverless(
            self.workspace(ctx).ml_client,
            deployed.endpoint_name,
            observer=ctx.observer,
            **self.endpoint_options,
        )

    # -- teardown -------------------------------------------------------------------------

    def reconcile(self, ctx: StepContext) -> None:
        """Journal the marketplace subscription as billable when teardown must delete it."""
        if not ctx.config.serverless.delete_marketplace_subscription:
            return
        for sub in ctx.existing(SUBSCRIPTION_KIND):
            ctx.observer.created(SUBSCRIPTION_KIND, sub.name, billable=True)

    def delete_resource(self, ctx: StepContext, resource: ResourceRecord) -> None:
        from phi_finetune.serverless.endpoint import delete_endpoint, delete_subscription

        ml_client = self.workspace(ctx).ml_client
        if resource.kind == "endpoint":
            delete_endpoint(ml_client, resource.name)
        elif resource.kind == SUBSCRIPTION_KIND:
            delete_subscription(ml_client, resource.name)
        elif resource.kind == "job":
            from phi_finetune.azure.boundary import call, is_not_found

            try:
                call(
                    f"cancel job {resource.name!r}",
                    lambda: ml_client.jobs.begin_cancel(resource.name).result(),
                )
            except Exception as exc:
                if exc.__cause__ is None or not is_not_found(exc.__cause__):
                    raise


def _registry_path(registry: str, name: str) -> str:
    return f"azureml://registries/{registry}/models/{name}"


def _subscription_name(model_name: str) -> str:
    return f"{model_name.replace('.', '-')}-sub"


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def _prepare_with_validation(ctx: StepContext) -> PreparedDataRecord:
    """``prepare_data_files``, carving :data:`DEFAULT_VALIDATION_PC` % of the training split
    off as validation data when the user set no ``validation_pc`` and the data has no
    validation split (the serverless job needs one). When the carve holds no row (a small
    sample), the prepared ``test`` split is the validation data."""
    data = ctx.config.data
    if data.validation_pc is not None:
        return prepare_data_files(ctx)[1]
    carving = attrs.evolve(ctx.config, data=attrs.evolve(data, validation_pc=DEFAULT_VALIDATION_PC))
    try:
        record = prepare_data_files(attrs.evolve(ctx, config=carving))[1]
    except ConfigurationError as exc:
        if exc.key != "validation_pc":
            raise
        record = prepare_data_files(ctx)[1]  # the data has its own validation split
    if record.counts.get("validation") or not record.counts.get("test"):
        return record
    logger.warning(
        "the %s%% validation carve of %d training rows is empty; using the test split (%d rows) "
        "as validation data (set [data] validation_pc higher to carve one instead)",
        f"{DEFAULT_VALIDATION_PC:g}",
        record.counts.get("train", 0),
        record.counts["test"],
    )
    return attrs.evolve(
        record,
        files={**record.files, "validation": record.files["test"]},
        counts={**record.counts, "validation": record.counts["test"]},
        sha256={**record.sha256, "validation": record.sha256["test"]},
    )
