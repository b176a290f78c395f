"""Safe rollouts: a new model version beside the old one on the same endpoint, then traffic.

A :class:`Rollout` puts a second deployment (the new model version) under an existing managed
online endpoint with no live traffic, optionally mirrors a share of the live traffic to it (a
shadow test), shifts live traffic to it in steps (default 10, 50, 100 percent) and deletes the old
deployment; :meth:`Rollout.rollback` sends all traffic back to the old deployment and deletes the
new one. Every stage is journaled in the run that owns the endpoint (the new deployment's
resource record carries the plan and the progress): the deployment before its create request,
each traffic state before it is sent and once it is applied. A process killed anywhere continues
from the journal (:meth:`Rollout.load`, ``FineTuneSession.rollout()``) without a second
deployment and lands in the requested end state.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.boundary import call, get_or_none
from phi_finetune.azure.deployment_handle import state_text
from phi_finetune.azure.rollout_status import (
    ACTIVE,
    DEFAULT_STEPS,
    KEY,
    MAX_MIRROR_PERCENT,
    RolloutStatus,
    check_plan,
    current_deployment,
    journaled_status,
    plans,
    record_of,
    shares,
    stage_texts,
)
from phi_finetune.errors import (
    ConfigurationError,
    DeploymentError,
    RunStateError,
    WaitTimeoutError,
)
from phi_finetune.names import validate_deployment_name, validate_endpoint_name

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from phi_finetune.azure.deployer import EndpointDeployer
    from phi_finetune.azure.deployment_spec import DeploymentSpec
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import Journal
    from phi_finetune.session import FineTuneSession

__all__ = [
    "DEFAULT_STEPS",
    "MAX_MIRROR_PERCENT",
    "Rollout",
    "RolloutStatus",
    "current_deployment",
    "journaled_status",
    "rollout_for_session",
]

logger = logging.getLogger(__name__)


class Rollout:
    """A journaled, resumable rollout on one endpoint (build it with :meth:`begin` or
    :meth:`load`, or through ``FineTuneSession.rollout``).

    :meth:`start` creates the new deployment at 0% (and the mirror), :meth:`step` runs the next
    stage, :meth:`finish` runs every stage left (it also completes an interrupted rollback),
    :meth:`rollback` returns all traffic to the old deployment and deletes the new one.
    """

    def __init__(
        self,
        ml_client: MLClient,
        journal: Journal,
        *,
        wait_timeout_s: float = 3600.0,
        poll_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from phi_finetune.azure.deployer import EndpointDeployer

        if record_of(journal) is None:
            raise RunStateError(
                f"run {journal.run_id} has no rollout; begin one with Rollout.begin(...) or "
                "`phi-finetune rollout start RUN_ID --model ... --deployment ...`"
            )
        self._ml = ml_client
        self._journal = journal
        self._timeout_s = wait_timeout_s
        self._poll_s = poll_interval_s
        self._clock = clock
        self._sleep = sleep
        self._deployer: EndpointDeployer = EndpointDeployer(
            ml_client,
            wait_timeout_s=wait_timeout_s,
            poll_interval_s=poll_interval_s,
            clock=clock,
            sleep=sleep,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def begin(
        cls,
        ml_client: MLClient,
        journal: Journal,
        model: Any,
        *,
        endpoint_name: str,
        spec: DeploymentSpec,
        old_deployment: str | None = None,
        steps: Sequence[int] = DEFAULT_STEPS,
        mirror_percent: int = 0,
        delete_old: bool = True,
        **options: Any,
    ) -> Rollout:
        """Check the plan (offline first, then the endpoint as it is) and journal it; nothing is
        created yet. ``spec.deployment_name`` names the new deployment; ``old_deployment``
        defaults to the one with most live traffic; ``options`` are the constructor's. The
        same plan again (a re-run cell or script) returns the journaled rollout."""
        from phi_finetune.azure.deployer import _model_reference

        model_ref = _model_reference(model)
        validate_endpoint_name(endpoint_name)
        new = spec.deployment_name
        validate_deployment_name(new)
        spec.check()
        found = record_of(journal)
        if found is not None and found["phase"] in ACTIVE:
            same = (found["endpoint"], found["new"], found["model"]) == (
                endpoint_name,
                new,
                model_ref,
            )
            if same:
                return cls(ml_client, journal, **options)
            raise RunStateError(
                f"run {journal.run_id} has a rollout of {found['model']} to deployment "
                f"{found['new']!r} in progress; finish it (`phi-finetune rollout finish "
                f"{journal.run_id}`) or roll it back first"
            )
        endpoint = call(
            f"get endpoint {endpoint_name!r}",
            lambda: ml_client.online_endpoints.get(name=endpoint_name),
        )
        live = shares(endpoint.traffic)
        if old_deployment is None:
            if not live:
                raise ConfigurationError(
                    f"endpoint {endpoint_name!r} sends no live traffic to any deployment; name "
                    "the deployment to replace with old_deployment=",
                    key="old_deployment",
                )
            old_deployment = max(live, key=lambda dep: live[dep])
        validate_deployment_name(old_deployment, parameter="old_deployment")
        values = check_plan(steps, mirror_percent, old_deployment, new)
        deployments = {
            d.name.lower(): d
            for d in call(
                f"list the deployments of {endpoint_name!r}",
                lambda: list(ml_client.online_deployments.list(endpoint_name=endpoint_name)),
            )
        }
        old = deployments.get(old_deployment.lower())
        if old is None:
            raise ConfigurationError(
                f"old_deployment={old_deployment!r} is not a deployment of endpoint "
                f"{endpoint_name!r} (it has: {', '.join(sorted(deployments)) or 'none'})",
                key="old_deployment",
            )
        if new.lower() in deployments:
            raise ConfigurationError(
                f"deployment {new!r} already exists on endpoint {endpoint_name!r}; pick a new "
                "name for the new model version (deployment_name=...)",
                key="deployment_name",
            )
        if live and set(live) != {old_deployment.lower()}:
            raise ConfigurationError(
                f"endpoint {endpoint_name!r} splits its traffic {live}; a rollout starts from "
                f"one deployment at 100% (set the traffic to {{{old_deployment!r}: 100}} first)",
                key="old_deployment",
            )
        if spec.instance_type is None:
            # The size the old deployment runs on is known to fit the model and the quota.
            spec = attrs.evolve(spec, instance_type=old.instance_type)
        if spec.check_quota:
            from phi_finetune.azure.compute import check_deployment_quota

            # Both deployments run side by side until the old one is deleted.
            check_deployment_quota(ml_client, str(spec.instance_type), spec.instance_count)
        plan = {
            "endpoint": endpoint_name,
            "old": old_deployment,
            "new": new,
            "model": model_ref,
            "steps": list(values),
            "mirror_percent": mirror_percent,
            "delete_old": bool(delete_old),
            "spec": _spec_dict(spec),
            "phase": "rolling_out",
            "stages_done": 0,
            "traffic": live,
            "mirror_traffic": shares(endpoint.mirror_traffic),
            "pending": None,
            "history": [],
            "seq": 1 + max((int(p.get("seq", 0)) for p in plans(journal)), default=0),
        }
        # The intent, before any create request: a kill from here on leaves the name journaled.
        journal.record_resource(
            "deployment",
            new,
            billable=True,
            state="creating",
            details={
                KEY: plan,
                "endpoint": endpoint_name,
                "instance_type": spec.instance_type,
                "instance_count": spec.instance_count,
            },
        )
        return cls(ml_client, journal, **options)

    @classmethod
    def load(cls, ml_client: MLClient, journal: Journal, **options: Any) -> Rollout:
        """The rollout journaled in ``journal`` (in progress or over)."""
        return cls(ml_client, journal, **options)

    # ------------------------------------------------------------------ public API
    def status(self) -> RolloutStatus:
        """Where the rollout stands, from the journal (no request)."""
        return journaled_status(self._journal)

    def start(self) -> RolloutStatus:
        """Create the new deployment with no live traffic (and mirror to it if planned)."""
        with self._journal.driving():
            if self._plan()["phase"] == "rolling_out" and self._plan()["stages_done"] == 0:
                self._run_stage()
        return self.status()

    def step(self) -> RolloutStatus:
        """Run the next stage (the first one creates the deployment)."""
        with self._journal.driving():
            plan = self._plan()
            if plan["phase"] == "rolling_back":
                self._rollback()
            elif plan["phase"] == "rolling_out":
                self._run_stage()
        return self.status()

    def finish(self) -> RolloutStatus:
        """Every stage left, up to the old deployment deleted (or the interrupted rollback)."""
        with self._journal.driving():
            if self._plan()["phase"] == "rolling_back":
                self._rollback()
            while self._plan()["phase"] == "rolling_out":
                self._run_stage()
        return self.status()

    def rollback(self) -> RolloutStatus:
        """All live traffic back to the old deployment, no mirror, the new deployment deleted."""
        with self._journal.driving():
            plan = self._plan()
            if plan["phase"] == "done":
                raise RunStateError(
                    f"the rollout to {plan['new']!r} finished and deleted {plan['old']!r}; to go "
                    f"back, begin a new rollout of the old model version on {plan['endpoint']!r}"
                )
            if plan["phase"] != "rolled_back":
                self._rollback()
        return self.status()

    def endpoint(self) -> Endpoint:
        """The endpoint, pinned to the deployment that serves after the rollout (the new one
        once done, the old one after a rollback; unpinned while traffic is split)."""
        from phi_finetune.backends import JournalObserver
        from phi_finetune.endpoint import Endpoint

        plan = self._plan()
        pinned = {"done": plan["new"], "rolled_back": plan["old"]}.get(plan["phase"])
        return Endpoint.from_name(
            self._ml,
            plan["endpoint"],
            deployment_name=pinned,
            observer=JournalObserver(self._journal),
        )

    def __repr__(self) -> str:
        plan = self._plan()
        return (
            f"Rollout(endpoint={plan['endpoint']!r}, old={plan['old']!r}, new={plan['new']!r}, "
            f"phase={plan['phase']!r}, stages_done={plan['stages_done']})"
        )

    # ------------------------------------------------------------------ journal
    def _plan(self) -> dict[str, Any]:
        found = record_of(self._journal)
        assert found is not None  # checked in __init__; a journal never loses records
        return found

    def _save(self, **changes: Any) -> dict[str, Any]:
        plan = {**self._plan(), **changes}
        record = self._journal.resource("deployment", plan["new"])
        state = "creating" if record is None else record.state
        self._journal.record_resource(
            "deployment", plan["new"], state=state, billable=True, details={KEY: plan}
        )
        return plan

    # ------------------------------------------------------------------ stages
    def _stages(self, plan: Mapping[str, Any]) -> list[tuple[str, Callable[[], None]]]:
        old, new, mirror = plan["old"], plan["new"], int(plan["mirror_percent"])
        work: list[Callable[[], None]] = [
            functools.partial(self._create_and_apply, {old: 100}, {new: mirror} if mirror else {})
        ]
        work += [
            functools.partial(self._apply, {old: 100 - share, new: share}, {})
            for share in plan["steps"]
        ]
        if plan["delete_old"]:
            work.append(functools.partial(self._delete, old))
        return list(zip(stage_texts(plan), work, strict=True))

    def _run_stage(self) -> None:
        plan = self._plan()
        stages = self._stages(plan)
        index = int(plan["stages_done"])
        if index < len(stages):
            text, work = stages[index]
            logger.info("rollout on %s: %s", plan["endpoint"], text)
            work()
            index += 1
        self._save(stages_done=index, phase="done" if index >= len(stages) else "rolling_out")

    def _create_and_apply(self, traffic: dict[str, int], mirror: dict[str, int]) -> None:
        self._ensure_deployment()
        self._apply(traffic, mirror)

    def _ensure_deployment(self) -> None:
        """Create the new deployment unless an earlier attempt did (then wait for it)."""
        from phi_finetune.azure.deployment_spec import DeploymentSpec

        plan = self._plan()
        endpoint, new = plan["endpoint"], plan["new"]
        what = f"deployment {new} on {endpoint}"
        state = self._deployer._deployment_state(endpoint, new)
        if state is None:
            spec = DeploymentSpec(**plan["spec"])
            deployment = spec.to_deployment(endpoint, plan["model"])
            size = {"instance_type": spec.instance_type, "instance_count": spec.instance_count}
            self._journal.record_resource(
                "deployment", new, billable=True, state="creating", details=size
            )
            poller = call(
                f"create {what}",
                lambda: self._ml.online_deployments.begin_create_or_update(deployment),
            )
            self._journal.record_resource("deployment", new, billable=True, state="created")
            try:
                done = self._deployer._wait(poller, what=what, timeout=self._timeout_s)
            except WaitTimeoutError:
                raise
            except Exception as exc:
                self._failed(endpoint, new, str(getattr(exc, "message", None) or exc))
            state = state_text(getattr(done, "provisioning_state", None)) or None
            if state is None:
                state = self._deployer._deployment_state(endpoint, new)
        else:
            logger.info("%s exists (%s): not creating it again", what, state)
            self._journal.record_resource("deployment", new, billable=True, state="created")
            state = self._wait_state(endpoint, new, state)
        if state not in (None, "succeeded"):
            self._failed(endpoint, new, f"it ended in state {state!r}")

    def _wait_state(self, endpoint: str, name: str, state: str | None) -> str | None:
        """Poll a deployment an earlier process created until it leaves its transient state."""
        deadline = self._clock() + self._timeout_s
        while state in ("creating", "updating", "scaling"):
            if self._clock() >= deadline:
                raise WaitTimeoutError(
                    f"deployment {name} on {endpoint} was still {state} after "
                    f"{self._timeout_s:g} s; raise wait_timeout_s or check it in the studio"
                )
            self._sleep(self._poll_s)
            state = self._deployer._deployment_state(endpoint, name)
        return state

    def _failed(self, endpoint: str, name: str, reason: str) -> None:
        lines = self._deployer._log_lines(endpoint, name, 50)
        raise DeploymentError(
            f"deployment {name!r} on endpoint {endpoint!r} failed: {reason}. The old deployment "
            "still serves all live traffic. Roll back to delete the new one "
            f"(`phi-finetune rollout rollback {self._journal.run_id}`), or fix the cause and "
            "resume.",
            log_lines=lines,
        )

    def _apply(self, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        """Send one traffic state (journaled before it is sent and once it is applied); a
        state the endpoint already has is not sent again."""
        plan = self._plan()
        name = plan["endpoint"]
        wanted, shadow = shares(traffic), shares(mirror)
        current = call(f"get endpoint {name!r}", lambda: self._ml.online_endpoints.get(name=name))
        if shares(current.traffic) != wanted or shares(current.mirror_traffic) != shadow:
            self._save(pending={"traffic": wanted, "mirror_traffic": shadow})
            current.traffic = dict(traffic)
            current.mirror_traffic = dict(mirror)
            poller = call(
                f"update the traffic of endpoint {name!r}",
                lambda: self._ml.online_endpoints.begin_create_or_update(current),
            )
            self._deployer._wait(poller, what=f"traffic update of {name}", timeout=self._timeout_s)
        history = [
            *self._plan()["history"],
            {"traffic": wanted, "mirror_traffic": shadow, "at": _now()},
        ]
        self._save(traffic=wanted, mirror_traffic=shadow, pending=None, history=history)

    def _delete(self, deployment: str) -> None:
        endpoint = self._plan()["endpoint"]
        what = f"delete deployment {deployment!r} of endpoint {endpoint!r}"
        found = self._deployer._retrying(what)(
            get_or_none,
            what,
            lambda: self._ml.online_deployments.get(name=deployment, endpoint_name=endpoint),
            attempts=1,
        )
        if found is not None:
            poller = call(
                what,
                lambda: self._ml.online_deployments.begin_delete(
                    name=deployment, endpoint_name=endpoint
                ),
            )
            self._deployer._wait(poller, what=f"deletion of {deployment}", timeout=self._timeout_s)
        self._journal.mark_deleted("deployment", deployment)

    def _rollback(self) -> None:
        plan = self._save(phase="rolling_back")
        self._apply({plan["old"]: 100}, {})
        self._delete(plan["new"])
        self._save(phase="rolled_back")


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _spec_dict(spec: DeploymentSpec) -> dict[str, Any]:
    data = spec.to_dict()
    data["wait_timeout_s"] = spec.wait_timeout_s
    return data


def rollout_for_session(
    session: FineTuneSession,
    model: Any = None,
    *,
    deployment_name: str | None = None,
    old_deployment: str | None = None,
    steps: Sequence[int] = DEFAULT_STEPS,
    mirror_percent: int = 0,
    delete_old: bool = True,
    **settings: Any,
) -> Rollout:
    """``FineTuneSession.rollout``: the run's endpoint (its deploy step), the ``[deploy]``
    settings with ``settings`` (:class:`DeploymentSpec` fields) on top; ``deployment_name``
    defaults to ``deploy-v<model version>``."""
    from phi_finetune.azure.deployer import _merge_spec, _model_reference
    from phi_finetune.azure.deployment_spec import DeploymentSpec

    backend = session.backend
    workspace = getattr(backend, "workspace", None)
    if workspace is None:
        raise ConfigurationError(
            f"rollouts need an Azure ML endpoint; this run uses the {backend.name!r} backend",
            key="backend",
        )
    ctx = session._context()
    ml_client = workspace(ctx).ml_client
    deploy = session.config.deploy
    options = {
        "wait_timeout_s": float(deploy.wait_timeout_s),
        "poll_interval_s": float(getattr(backend, "poll_interval_s", 10.0)),
    }
    if model is None:
        return Rollout.load(ml_client, session.journal, **options)
    deployed = ctx.deployment
    if deployed is None:
        raise RunStateError(
            f"run {session.run_id} has not deployed yet: a rollout replaces a deployment; run "
            "`session.deploy()` first"
        )
    model_ref = _model_reference(model)
    if deployment_name is None:
        version = model_ref.rsplit(":", 1)[-1] if model_ref.count(":") >= 2 else ""
        deployment_name = f"deploy-v{version}" if version.isalnum() else "rollout"
    spec = DeploymentSpec.from_config(
        deploy,
        endpoint_name=deployed.endpoint_name,
        check_quota=session.config.compute.check_quota,
    )
    spec = _merge_spec(spec, {**settings, "deployment_name": deployment_name})
    return Rollout.begin(
        ml_client,
        session.journal,
        model_ref,
        endpoint_name=deployed.endpoint_name,
        spec=spec,
        old_deployment=old_deployment
        or current_deployment(session.journal, deployed.deployment_name),
        steps=steps,
        mirror_percent=mirror_percent,
        delete_old=delete_old,
        **options,
    )
