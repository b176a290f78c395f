"""``FineTuneSession``: the whole workflow in a few lines, journaled so a crash loses nothing.

::

    session = FineTuneSession.from_config("phi-finetune.toml")
    result = session.run()          # prepare_data -> plan -> fine_tune -> register
                                    # -> deploy -> score -> teardown
    FineTuneSession.resume(result.run_id)      # after a crash: continues, never duplicates
    FineTuneSession.teardown_run(run_id)       # deletes every billable resource of a run

Each step is also a method returning the step's typed record (:mod:`phi_finetune.steps`):
``prepare_data() -> PreparedDataRecord``, ``plan() -> PlanRecord`` (``str(plan)`` is the plan
table), ``fine_tune() -> JobRecord``, ``register() -> ModelRef``, ``deploy() -> Endpoint``,
``score_sample() -> ScoreRecord``. Every step's record and every resource created are in the
run's journal (``<state_dir>/runs/<run_id>/journal.json``) before and after each remote call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from phi_finetune._redact import redact
from phi_finetune.backends import STEPS, Backend, StepContext
from phi_finetune.constants import default_state_dir
from phi_finetune.errors import PhiFinetuneError, RunStateError
from phi_finetune.steps import (
    DeploymentRecord,
    JobRecord,
    ModelRef,
    PlanRecord,
    PreparedDataRecord,
    ScoreRecord,
    StepRecordType,
    TeardownRecord,
)

if TYPE_CHECKING:
    from phi_finetune.azure.rollout import Rollout
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.config import RunConfig
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import Journal, RunSummary
    from phi_finetune.report import RunReport

__all__ = ["FineTuneSession", "RunResult"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R", bound=StepRecordType)


@attrs.frozen
class RunResult:
    """What :meth:`FineTuneSession.run` produced: each completed step's record (``None`` for a
    step that did not run)."""

    run_id: str
    backend: str
    run_dir: Path
    prepared: PreparedDataRecord | None = attrs.field(default=None, repr=False)
    plan: PlanRecord | None = attrs.field(default=None, repr=False)
    job: JobRecord | None = attrs.field(default=None, repr=False)
    model: ModelRef | None = None
    """The registered model; ``str(result.model)`` is ``<name>:<version>``."""
    endpoint: DeploymentRecord | None = attrs.field(default=None, repr=False)
    score: ScoreRecord | None = attrs.field(default=None, repr=False)
    teardown: TeardownRecord | None = attrs.field(default=None, repr=False)

    @property
    def job_name(self) -> str | None:
        return self.job.name if self.job else None

    @property
    def endpoint_name(self) -> str | None:
        return self.endpoint.endpoint_name if self.endpoint else None

    @property
    def request(self) -> Any:
        return self.score.request if self.score else None

    @property
    def reply(self) -> str | None:
        return self.score.reply if self.score else None

    def to_dict(self) -> dict[str, Any]:
        """Every completed step's record as JSON values, by step name."""
        records = {
            "prepare_data": self.prepared,
            "plan": self.plan,
            "fine_tune": self.job,
            "register": self.model,
            "deploy": self.endpoint,
            "score": self.score,
            "teardown": self.teardown,
        }
        return {step: r.to_dict() for step, r in records.items() if r is not None}

    @property
    def outputs(self) -> dict[str, Any]:
        """Deprecated (0.1.0's dicts by step name): use the typed fields or :meth:`to_dict`."""
        import warnings

        warnings.warn(
            "RunResult.outputs is deprecated and goes in 0.3.0; use the typed fields "
            "(result.plan, result.job, result.model, ...) or result.to_dict()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict()


class FineTuneSession:
    """The facade: runs the workflow's steps on a backend and keeps the run's journal.

    Build it with :meth:`from_config`; components (workspace, backend) are injectable for tests.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        backend: Backend | None = None,
        workspace: Workspace | None = None,
        journal: Journal | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from phi_finetune.journal import Journal

        self.config = config
        self.state_dir = Path(state_dir if state_dir is not None else config.state_dir)
        self.backend: Backend = backend or _make_backend(config, workspace=workspace)
        self.journal = journal or Journal.create(
            self.state_dir, backend=self.backend.name, config=config.to_dict()
        )
        self._endpoint: Endpoint | None = None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: RunConfig | str | os.PathLike[str] | None = None,
        *,
        backend: str | Backend | None = None,
        workspace: Workspace | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> FineTuneSession:
        """A new run from a config object or a ``phi-finetune.toml`` path.

        ``backend`` (``"azure"``, ``"local"`` or ``"serverless"``, or a backend object)
        overrides the config's.
        """
        from phi_finetune.config import RunConfig, load_run_config

        run_config = (
            RunConfig()
            if config is None
            else config
            if isinstance(config, RunConfig)
            else load_run_config(config)
        )
        if isinstance(backend, str):
            run_config = attrs.evolve(run_config, backend=backend)
            backend = None
        if state_dir is not None:
            run_config = attrs.evolve(run_config, state_dir=str(state_dir))
        return cls(run_config, backend=backend, workspace=workspace)

    @classmethod
    def resume(
        cls,
        run_id: str,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        backend: Backend | None = None,
        workspace: Workspace | None = None,
    ) -> FineTuneSession:
        """Reopen a run from its journal; call :meth:`run` to continue from the last step.

        A submitted job is reattached rather than submitted again, a registered model or a
        deployed endpoint is reused rather than created twice.
        """
        from phi_finetune.config import RunConfig
        from phi_finetune.journal import Journal

        folder = Path(state_dir) if state_dir is not None else default_state_dir()
        journal = Journal.load(folder, run_id)
        config = RunConfig.from_dict(journal.config, source=f"journal of run {run_id}")
        config = attrs.evolve(config, state_dir=str(folder))
        return cls(config, backend=backend, workspace=workspace, journal=journal)

    @staticmethod
    def list_runs(state_dir: str | os.PathLike[str] | None = None) -> list[RunSummary]:
        """Every run under ``state_dir`` (default ``$PHI_FINETUNE_STATE_DIR``, else
        ``.phi_finetune``) with what it still holds."""
        from phi_finetune.journal import list_runs

        return list_runs(state_dir)

    @classmethod
    def teardown_run(
        cls,
        run_id: str,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        backend: Backend | None = None,
        workspace: Workspace | None = None,
    ) -> list[str]:
        """Delete every billable resource run ``run_id`` created; returns what was deleted."""
        return cls.resume(
            run_id, state_dir=state_dir, backend=backend, workspace=workspace
        ).teardown()

    # -- state ----------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    @property
    def run_dir(self) -> Path:
        return self.journal.run_dir

    def _records(self) -> dict[str, Any]:
        return {s: self.journal.record_of(s) for s in STEPS if self.journal.is_completed(s)}

    def _context(self) -> StepContext:
        return StepContext(
            config=self.config, journal=self.journal, run_dir=self.run_dir, records=self._records()
        )

    def _step(
        self,
        name: str,
        work: Callable[[StepContext], _R],
        kind: type[_R],
        *,
        force: bool = False,
    ) -> _R:
        # No other process may drive this run while a step runs (RunInUseError after a
        # short wait); the lock is reentrant, so run() holding it already is fine.
        with self.journal.driving():
            return self._step_unlocked(name, work, kind, force=force)

    def _step_unlocked(
        self,
        name: str,
        work: Callable[[StepContext], _R],
        kind: type[_R],
        *,
        force: bool,
    ) -> _R:
        if not force and self.journal.is_completed(name):
            logger.info("step %s already completed in run %s; reusing it", name, self.run_id)
            record: _R = self.journal.record_of(name)
            return record
        self.journal.begin_step(name, inputs={"backend": self.backend.name})
        started = time.monotonic()
        try:
            record = work(self._context())
            if not isinstance(record, kind):
                raise RunStateError(
                    f"backend {self.backend.name!r} returned a {type(record).__name__} from "
                    f"step {name!r}; a backend's {name} must return a {kind.__name__}"
                )
            outputs = _json_safe(record.to_dict())
        except BaseException as exc:
            self.journal.fail_step(name, redact(f"{type(exc).__name__}: {exc}"))
            raise
        outputs["seconds"] = round(time.monotonic() - started, 3)
        self.journal.complete_step(name, outputs)
        # What the journal holds (JSON values, secrets masked) is what a resume will read.
        journaled: _R = self.journal.record_of(name)
        return journaled

    # -- steps ----------------------------------------------------------------------------

    def prepare_data(self) -> PreparedDataRecord:
        """Step 7: load, validate, sample and write the data (and register it on Azure)."""
        return self._step("prepare_data", self.backend.prepare_data, PreparedDataRecord)

    def plan(self) -> PlanRecord:
        """Steps 5, 6, 8, 9: resolve and pin the model and component versions, check compute
        and quota, validate parameters. ``str()`` of the result is the plan table."""
        self.prepare_data()
        return self._step("plan", self.backend.plan, PlanRecord)

    def fine_tune(self) -> JobRecord:
        """Steps 10-11: submit exactly the journaled plan (or reattach to the job an earlier
        attempt submitted) and wait for it."""
        self.plan()
        return self._step("fine_tune", self.backend.fine_tune, JobRecord)

    def register(self) -> ModelRef:
        """Step 12: register the trained model (reuses the version registered before)."""
        self.fine_tune()
        return self._step("register", self.backend.register, ModelRef)

    def deploy(self) -> Endpoint:
        """Steps 13-14: endpoint and deployment (reattached when the journal has one)."""
        self.register()
        if self._endpoint is not None and not self._endpoint.deleted:
            return self._endpoint
        if self.journal.is_completed("deploy"):
            endpoint = self.backend.endpoint(self._context())
            if endpoint is not None:
                self._endpoint = endpoint
                return endpoint

        def work(ctx: StepContext) -> DeploymentRecord:
            endpoint = self.backend.deploy(ctx)
            self._endpoint = endpoint
            return DeploymentRecord(
                endpoint_name=endpoint.name,
                deployment_name=endpoint.deployment_name,
                scoring_uri=endpoint.scoring_uri,
            )

        self._step("deploy", work, DeploymentRecord, force=True)
        assert self._endpoint is not None
        return self._endpoint

    def score_sample(self) -> ScoreRecord:
        """Step 15: score one held-out conversation; the request is written to sample_score.json."""
        endpoint = self.deploy()

        def work(ctx: StepContext) -> ScoreRecord:
            from phi_finetune._atomic import atomic_write_json
            from phi_finetune.backends import sample_scoring_request

            request = sample_scoring_request(
                ctx.prepared,
                seed=ctx.config.data.seed,
                parameters=ctx.config.score.parameters(),
            )
            request_file = ctx.run_dir / "sample_score.json"
            atomic_write_json(request_file, request)
            result = endpoint.invoke_file(request_file)
            return ScoreRecord(request=request, request_file=str(request_file), reply=result.text)

        return self._step("score", work, ScoreRecord, force=True)

    def rollout(self, model: Any = None, **options: Any) -> Rollout:
        """A safe rollout of ``model`` (a new version) on this run's endpoint, journaled in this
        run; without ``model``, the rollout journaled before (to resume it). ``options``: see
        :func:`phi_finetune.azure.rollout.rollout_for_session` (``deployment_name``, ``steps``,
        ``mirror_percent``, ``delete_old``, deployment settings). Azure backend only."""
        from phi_finetune.azure.rollout import rollout_for_session

        self._endpoint = None  # the endpoint moves to another deployment
        return rollout_for_session(self, model, **options)

    def teardown(self) -> list[str]:
        """Step 16: delete every billable resource this run created that is still alive.

        Every deletion is attempted; a job the journal knows only as "creating" (its submit
        reply was lost) is looked up by its run tag and canceled. Raises
        :class:`~phi_finetune.errors.RunStateError` naming each resource that could not be
        deleted; those stay listed as live, and calling ``teardown`` again is safe.
        """
        from phi_finetune._teardown import delete_billable

        self._endpoint = None
        return delete_billable(self.journal, self.backend, self._context())

    def run(self, *, teardown_on_error: bool = True) -> RunResult:
        """All steps; deploy/score/teardown as configured (``deploy.enabled``,
        ``score.enabled``, ``deploy.keep_endpoint``).

        On an exception (Ctrl-C and :class:`~phi_finetune.errors.WaitTimeoutError` included)
        what bills while idle and a resume recreates is deleted (``teardown_on_error``):
        endpoints, deployments, local servers. A fine-tune job is never canceled here: it stays
        running and journaled, and :meth:`resume` reattaches to it; :meth:`teardown` cancels it.
        A killed process leaves everything in the journal for :meth:`resume` or
        :meth:`teardown`.
        """
        with self.journal.driving():
            return self._run(teardown_on_error=teardown_on_error)

    def _run(self, *, teardown_on_error: bool) -> RunResult:
        try:
            self.register()
            # A resumed run that already scored (or deployed, when scoring is off) only has
            # teardown left: deploying again would create a second endpoint.
            last = "score" if self.config.score.enabled else "deploy"
            if self.config.deploy.enabled and not self.journal.is_completed(last):
                self.deploy()
                if self.config.score.enabled:
                    self.score_sample()
        except BaseException:
            if teardown_on_error:
                self._clean_up_after_error()
            raise
        if self.config.deploy.enabled and not self.config.deploy.keep_endpoint:
            self.teardown()
        self.journal.finish()
        return self.result()

    def _clean_up_after_error(self) -> None:
        from phi_finetune._teardown import CLEANUP_ON_ERROR_KINDS, delete_billable

        live = self.journal.resources(billable_only=True, alive_only=True)
        for job in (r for r in live if r.kind == "job"):
            logger.warning(
                "run %s failed; job %s is kept (it may still run and bill): `phi-finetune "
                "resume %s` reattaches to it, `phi-finetune teardown %s` cancels it",
                self.run_id,
                job.name,
                self.run_id,
                self.run_id,
            )
        if not any(r.kind in CLEANUP_ON_ERROR_KINDS for r in live):
            return
        logger.warning("run %s failed; deleting what it deployed", self.run_id)
        self._endpoint = None
        try:
            delete_billable(
                self.journal, self.backend, self._context(), kinds=CLEANUP_ON_ERROR_KINDS
            )
        except PhiFinetuneError as cleanup_error:
            logger.error("cleanup after failure failed: %s", cleanup_error)

    def report(
        self, *, out_dir: str | os.PathLike[str] | None = None, ml_client: Any = None
    ) -> RunReport:
        """Write this run's loss curves (``report.png``) and summary (``report.md``) to
        ``out_dir`` (default: the run's folder); see :func:`phi_finetune.report.build_report`."""
        from phi_finetune.report import build_report

        return build_report(
            self.run_id,
            state_dir=self.state_dir,
            out_dir=out_dir,
            ml_client=ml_client,
            journal=self.journal,
        )

    def result(self) -> RunResult:
        """The records of the steps completed so far."""
        records = self._records()
        return RunResult(
            run_id=self.run_id,
            backend=self.backend.name,
            run_dir=self.run_dir,
            prepared=records.get("prepare_data"),
            plan=records.get("plan"),
            job=records.get("fine_tune"),
            model=records.get("register"),
            endpoint=records.get("deploy"),
            score=records.get("score"),
            teardown=records.get("teardown"),
        )

    def __repr__(self) -> str:
        return f"FineTuneSession(run_id={self.run_id!r}, backend={self.backend.name!r})"


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """Step outputs as plain JSON values (paths and dates become strings)."""
    import json

    result: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return result


def _make_backend(config: RunConfig, *, workspace: Workspace | None) -> Backend:
    if config.backend == "local":
        from phi_finetune.local.backend import LocalBackend

        return LocalBackend()
    if config.backend == "azure":
        from phi_finetune.azure.backend import AzureBackend

        return AzureBackend(workspace=workspace)
    if config.backend == "serverless":
        from phi_finetune.serverless.backend import ServerlessBackend

        return ServerlessBackend(workspace=workspace)
    raise RunStateError(f"unknown backend {config.backend!r}; use 'azure', 'local' or 'serverless'")
