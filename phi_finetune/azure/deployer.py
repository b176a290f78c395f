"""Deploy a registered model to a managed online endpoint (workflow steps 13-14).

Everything that can be checked offline is checked before the first request
(:meth:`DeploymentSpec.check`): the endpoint and deployment names, the instance type against the
model's inference allow list, the instance count, probe and timeout values.
:meth:`EndpointDeployer.begin_deploy` sends the endpoint request and returns a
:class:`DeploymentHandle` (``status()``, ``done()``, ``wait()``, ``result()`` -> :class:`Endpoint`);
:meth:`EndpointDeployer.deploy` is ``begin_deploy(...).result()``. Resources are reported to a
:class:`~phi_finetune.observer.ResourceObserver` (``observer=``) right before each create request
and as soon as the service accepts it (before any waiting), so a run journal never loses track
of them. A failed deployment raises :class:`~phi_finetune.errors.DeploymentError` with the
last lines of its logs and deletes the endpoint unless ``keep_on_failure=True``.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune._redact import redact
from phi_finetune.azure.boundary import call, get_or_none, retrying
from phi_finetune.azure.compute import check_deployment_quota
from phi_finetune.azure.deploy_size import with_instance_type
from phi_finetune.azure.deployment_handle import DeploymentHandle, state_text
from phi_finetune.azure.deployment_spec import (
    DEFAULT_INSTANCE_TYPE,
    MAX_REQUEST_TIMEOUT_MS,
    DeploymentSpec,
    check_instance_type,
    parse_allow_list,
)
from phi_finetune.azure.registrar import RegisteredModel
from phi_finetune.endpoint import Endpoint, delete_online_endpoint, sdk_output_to_stderr
from phi_finetune.errors import (
    ConfigurationError,
    DeploymentError,
    EndpointError,
    PhiFinetuneError,
    WaitTimeoutError,
)
from phi_finetune.names import (
    DEFAULT_ENDPOINT_PREFIX,
    RUN_ID_TAG,
    derive_endpoint_name,
    generate_endpoint_name,
    validate_endpoint_name,
)
from phi_finetune.observer import (
    NullObserver,
    ResourceCallback,
    ResourceObserver,
    observer_from_callbacks,
)
from phi_finetune.progress import progress_bar

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core.polling import LROPoller

__all__ = [
    "DEFAULT_INSTANCE_TYPE",
    "MAX_REQUEST_TIMEOUT_MS",
    "DeploymentHandle",
    "DeploymentSpec",
    "EndpointDeployer",
    "check_instance_type",
    "parse_allow_list",
]

logger = logging.getLogger(__name__)

ENDPOINT_TAG_CREATOR = "created_by"
ENDPOINT_TAG_RUN = RUN_ID_TAG

_SPEC_FIELDS = frozenset(attrs.fields_dict(DeploymentSpec))
_NAME_ATTEMPTS = 5

# How the service refuses an endpoint name (answers to the endpoint PUT):
# - taken in the region (endpoint names are unique per region, across workspaces): 400
#   BadRequest, detail InferencingClientCallFailed "There is already an endpoint with this name,
#   Endpoint name needs to be unique within a region. Try some other name." (reported in
#   Azure/azureml-examples PR 1931 and Azure/mlops-project-template issue 29);
# - reserved, i.e. re-created soon after a deletion: 404 NotFound, detail
#   InferencingClientCallFailed {"title":"Not Found"} (Azure/azure-cli-extensions issue 7660).
# A 409 naming the endpoint name, or words like "reserved"/"recently deleted", count too.
_NAME_TAKEN = re.compile(
    r"already an endpoint with this name|unique within a region|name is already (taken|in use)"
    r"|name .{0,40}(is not available|already exists|is reserved)|recently deleted"
    r"|EndpointNameAlreadyExists|EndpointNameNotAvailable|EndpointNameReserved",
    re.IGNORECASE,
)


def name_refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is the service refusing an endpoint name on create."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        status = getattr(seen, "status_code", None)
        if status is None:
            status = getattr(getattr(seen, "response", None), "status_code", None)
        text = f"{getattr(seen, 'message', '')} {seen}"
        if status == 404 and not isinstance(seen, PhiFinetuneError):
            return True
        if _NAME_TAKEN.search(text) and status in (None, 400, 404, 409):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _run_of(endpoint: Any) -> str | None:
    tags = getattr(endpoint, "tags", None)
    value = tags.get(RUN_ID_TAG) if isinstance(tags, dict) else None
    return str(value) if value else None


def _model_reference(model: RegisteredModel | str) -> str:
    if isinstance(model, RegisteredModel):
        return model.asset_id
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            "model must be a RegisteredModel or a model id such as 'azureml:name:version'",
            key="model",
        )
    text = model.strip()
    if text.startswith(("azureml:", "/subscriptions/", "azureml://")):
        return text
    if text.count(":") == 1 and all(text.split(":")):
        return f"azureml:{text}"
    raise ConfigurationError(
        f"model={text!r} does not name a model version; use 'azureml:<name>:<version>', "
        "'<name>:<version>' or a RegisteredModel",
        key="model",
    )


class EndpointDeployer:
    """Creates and deletes managed online endpoints through an ``MLClient``.

    ``observer`` (a :class:`~phi_finetune.observer.ResourceObserver`) hears
    ``creating(kind, name, billable=True)`` right before each create request,
    ``created(...)`` as soon as the service accepted it (before waiting) and
    ``deleted(kind, name)`` after a deletion, with kind ``endpoint`` or ``deployment``. An
    ``observer`` given to :meth:`begin_deploy` replaces this one for that deployment. The 0.1
    callbacks ``on_creating``/``on_created``/``on_deleted`` (``fn(kind, name)``) are deprecated.
    """

    def __init__(
        self,
        ml_client: MLClient,
        *,
        wait_timeout_s: float = 3600.0,
        poll_interval_s: float = 10.0,
        observer: ResourceObserver | None = None,
        on_creating: ResourceCallback | None = None,
        on_created: ResourceCallback | None = None,
        on_deleted: ResourceCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ml_client = ml_client
        self._wait_timeout_s = wait_timeout_s
        self._poll_interval_s = poll_interval_s
        chosen = observer_from_callbacks(
            "EndpointDeployer()",
            observer,
            on_creating=on_creating,
            on_created=on_created,
            on_deleted=on_deleted,
        )
        self._observer: ResourceObserver = NullObserver() if chosen is None else chosen
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ public API
    def begin_deploy(
        self,
        model: RegisteredModel | str,
        spec: DeploymentSpec | None = None,
        *,
        reuse_endpoint: bool = False,
        run_id: str | None = None,
        observer: ResourceObserver | None = None,
        on_creating: ResourceCallback | None = None,
        on_created: ResourceCallback | None = None,
        on_deleted: ResourceCallback | None = None,
        **settings: Any,
    ) -> DeploymentHandle:
        """Check everything offline, then ask for a key-auth endpoint for ``model``; returns the
        :class:`DeploymentHandle` whose ``result()`` deploys on it, sends it 100% of the traffic,
        waits until it is healthy and returns the :class:`Endpoint`.

        ``spec`` defaults to ``DeploymentSpec()`` (the ``[deploy]`` defaults); ``settings`` are
        :class:`DeploymentSpec` fields set on top of it (the 0.1 keyword API:
        ``instance_type=...``, ``endpoint_name=...``). ``endpoint_name`` ``None`` means a fresh
        ``ultrachat-completion-<suffix>``. An endpoint that already exists is an error unless
        ``reuse_endpoint=True`` (used when resuming a run that created it); a deployment of the
        same name that already succeeded is then reused too. ``observer`` defaults to the
        deployer's; the deprecated ``on_*`` callbacks fall back to it one by one.
        """
        chosen = self._observer_for(
            "EndpointDeployer.begin_deploy", observer, on_creating, on_created, on_deleted
        )
        model_ref = _model_reference(model)
        spec = _merge_spec(spec, settings)
        spec.check()
        spec, quota_checked = with_instance_type(spec, self._ml_client)
        timeout = self._wait_timeout_s if spec.wait_timeout_s is None else spec.wait_timeout_s
        if timeout <= 0:
            raise ConfigurationError("wait_timeout_s must be > 0", key="wait_timeout_s")
        with sdk_output_to_stderr():
            name, existing = self._choose_endpoint(
                spec.endpoint_name, reuse=reuse_endpoint, run_id=run_id
            )
            if (
                spec.check_quota
                and not quota_checked
                and (existing is None or self._deployment_state(name, spec.deployment_name) is None)
            ):
                # Before any create: the deployment PUT would fail on quota only after the
                # endpoint exists (and bills nothing but still has to be cleaned up).
                check_deployment_quota(
                    self._ml_client, str(spec.instance_type), spec.instance_count
                )
            poller = None
            if existing is None:
                name, poller = self._create_unique_endpoint(name, spec, run_id, chosen)
        return DeploymentHandle(
            self,
            model_ref,
            spec,
            endpoint_name=name,
            existing=existing,
            endpoint_poller=poller,
            timeout_s=timeout,
            observer=chosen,
        )

    def deploy(
        self,
        model: RegisteredModel | str,
        spec: DeploymentSpec | None = None,
        *,
        reuse_endpoint: bool = False,
        run_id: str | None = None,
        observer: ResourceObserver | None = None,
        on_creating: ResourceCallback | None = None,
        on_created: ResourceCallback | None = None,
        on_deleted: ResourceCallback | None = None,
        **settings: Any,
    ) -> Endpoint:
        """``begin_deploy(...).result()``: deploy and wait (bounded); the :class:`Endpoint`."""
        chosen = self._observer_for(
            "EndpointDeployer.deploy", observer, on_creating, on_created, on_deleted
        )
        return self.begin_deploy(
            model, spec, reuse_endpoint=reuse_endpoint, run_id=run_id, observer=chosen, **settings
        ).result()

    def attach(
        self,
        endpoint_name: str,
        *,
        deployment_name: str | None = None,
        on_deleted: ResourceCallback | None = None,
    ) -> Endpoint:
        """Deprecated: use ``Endpoint.from_name(ml_client, endpoint_name)`` (removed in 0.3.0)."""
        warnings.warn(
            "EndpointDeployer.attach is deprecated; use Endpoint.from_name(ml_client, name)",
            DeprecationWarning,
            stacklevel=2,
        )
        chosen = self._observer_for("EndpointDeployer.attach", None, None, None, on_deleted)
        return Endpoint.from_name(
            self._ml_client, endpoint_name, deployment_name=deployment_name, observer=chosen
        )

    def exists(self, endpoint_name: str) -> bool:
        """Whether the workspace has an online endpoint of that name."""
        validate_endpoint_name(endpoint_name)
        return self._get_endpoint(endpoint_name) is not None

    def delete(self, endpoint_name: str) -> None:
        """Delete an endpoint (and its deployments) and wait; succeeds when it is already gone."""
        validate_endpoint_name(endpoint_name)
        delete_online_endpoint(self._ml_client, endpoint_name)
        self._observer.deleted("endpoint", endpoint_name)

    # ------------------------------------------------------------------ internals
    def _observer_for(
        self,
        where: str,
        observer: ResourceObserver | None,
        on_creating: ResourceCallback | None,
        on_created: ResourceCallback | None,
        on_deleted: ResourceCallback | None,
    ) -> ResourceObserver:
        chosen = observer_from_callbacks(
            where,
            observer,
            on_creating=on_creating,
            on_created=on_created,
            on_deleted=on_deleted,
            fallback=self._observer,
            stacklevel=4,
        )
        return self._observer if chosen is None else chosen

    def _create_endpoint(
        self, name: str, spec: DeploymentSpec, run_id: str | None, observer: ResourceObserver
    ) -> LROPoller[Any]:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        tags = {ENDPOINT_TAG_CREATOR: "phi_finetune", **dict(spec.tags)}
        if run_id:
            tags[ENDPOINT_TAG_RUN] = run_id
        endpoint = ManagedOnlineEndpoint(
            name=name,
            auth_mode="key",
            description=spec.description or "phi_finetune chat completion endpoint",
            tags=tags,
        )
        observer.creating("endpoint", name, billable=True)
        poller: LROPoller[Any] = call(
            f"create endpoint {name!r}",
            lambda: self._ml_client.online_endpoints.begin_create_or_update(endpoint),
        )
        observer.created("endpoint", name, billable=True)
        return poller

    def _choose_endpoint(
        self, endpoint_name: str | None, *, reuse: bool, run_id: str | None = None
    ) -> tuple[str, ManagedOnlineEndpoint | None]:
        if endpoint_name is not None:
            existing = self._get_endpoint(endpoint_name)
            if existing is None or reuse or (run_id and _run_of(existing) == run_id):
                return endpoint_name, existing
            # Taken in this workspace by something this run did not create: never touch it.
            other = self._free_name(endpoint_name, seed=run_id or endpoint_name)
            logger.warning(
                "endpoint %r already exists and was not created by this run; deploying to a "
                "new endpoint %r instead (pass reuse_endpoint=True to deploy on the existing one)",
                endpoint_name,
                other,
            )
            return other, None
        for _ in range(5):
            candidate = generate_endpoint_name()
            if self._get_endpoint(candidate) is None:
                return candidate, None
        raise EndpointError(  # pragma: no cover - five random collisions in a row
            "could not find a free endpoint name; pass endpoint_name explicitly"
        )

    def _free_name(self, base: str, *, seed: str, start: int = 1) -> str:
        """The first ``derive_endpoint_name(base, seed, n)`` (n from ``start``) that is free."""
        for attempt in range(start, start + _NAME_ATTEMPTS):
            candidate = derive_endpoint_name(base, seed, attempt)
            if self._get_endpoint(candidate) is None:
                return candidate
        raise EndpointError(
            f"endpoint name {base!r} and {_NAME_ATTEMPTS} names derived from it are taken; "
            "set deploy.endpoint_name to another name"
        )

    def _create_unique_endpoint(
        self, name: str, spec: DeploymentSpec, run_id: str | None, observer: ResourceObserver
    ) -> tuple[str, LROPoller[Any]]:
        """Create the endpoint; a name the service refuses as taken in the region or reserved
        (just deleted) is replaced by a derived one. Returns the name that was created."""
        base = spec.endpoint_name or DEFAULT_ENDPOINT_PREFIX
        seed = run_id or name
        for attempt in range(1, _NAME_ATTEMPTS + 1):
            try:
                return name, self._create_endpoint(name, spec, run_id, observer)
            except PhiFinetuneError as exc:
                if attempt == _NAME_ATTEMPTS or not name_refused(exc):
                    raise
                # The service created nothing: the journal's "creating" entry is not ours.
                observer.deleted("endpoint", name)
                refused = name
                name = self._free_name(base, seed=seed, start=attempt)
                logger.warning(
                    "the service refused endpoint name %r (taken in the region or reserved "
                    "after a deletion); using %r",
                    refused,
                    name,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, what: str) -> Any:
        return retrying(what, attempts=3, max_wait_s=10.0, sleep=self._sleep)

    def _get_endpoint(self, name: str) -> ManagedOnlineEndpoint | None:
        what = f"look up endpoint {name!r}"
        found: ManagedOnlineEndpoint | None = self._retrying(what)(
            get_or_none, what, lambda: self._ml_client.online_endpoints.get(name=name), attempts=1
        )
        return found

    def _deploy_on(
        self,
        endpoint_name: str,
        model_ref: str,
        spec: DeploymentSpec,
        *,
        timeout: float,
        reuse: bool,
        observer: ResourceObserver,
        endpoint: Any = None,
    ) -> Any:
        """Create (or reuse) the deployment and send it all traffic; the traffic update's reply
        (the endpoint as it is now; ``None`` when the service sent none). ``endpoint``: the
        endpoint this process just created (its create reply), not read again."""
        deployment_name = spec.deployment_name
        if reuse and self._deployment_state(endpoint_name, deployment_name) == "succeeded":
            logger.info(
                "deployment %s on %s already succeeded; reusing it", deployment_name, endpoint_name
            )
        else:
            deployment = spec.to_deployment(endpoint_name, model_ref)
            size = {"instance_type": spec.instance_type, "instance_count": spec.instance_count}
            observer.creating("deployment", deployment_name, billable=True, details=size)
            try:
                poller = self._ml_client.online_deployments.begin_create_or_update(deployment)
                observer.created("deployment", deployment_name, billable=True)
                done = self._wait(poller, what=f"deployment {deployment_name}", timeout=timeout)
                # The poller's last read is the deployment as it is now; read it only if the
                # reply carried no state.
                state = state_text(getattr(done, "provisioning_state", None)) or None
                if state is None:
                    state = self._deployment_state(endpoint_name, deployment_name)
                if state not in (None, "succeeded"):
                    raise _StateError(state)
            except (WaitTimeoutError, KeyboardInterrupt):
                raise
            except Exception as exc:
                self._fail(endpoint_name, spec, exc, observer=observer)
        # --- all traffic to the deployment
        try:
            current = endpoint
            if current is None or not hasattr(current, "traffic"):
                current = self._ml_client.online_endpoints.get(name=endpoint_name)
            current.traffic = {deployment_name: 100}
            return self._wait(
                self._ml_client.online_endpoints.begin_create_or_update(current),
                what=f"traffic update of {endpoint_name}",
                timeout=timeout,
            )
        except (WaitTimeoutError, KeyboardInterrupt):
            raise
        except Exception as exc:
            self._fail(
                endpoint_name,
                spec,
                exc,
                observer=observer,
                stage="sending traffic to",
            )
        return None

    def _deployment_state(self, endpoint_name: str, deployment_name: str) -> str | None:
        """The deployment's provisioning state in lower case; ``None`` when it does not exist
        or the service refuses to say (an HTTP error answer)."""
        from azure.core.exceptions import HttpResponseError

        what = f"get deployment {deployment_name!r} of endpoint {endpoint_name!r}"
        try:
            remote = self._retrying(what)(
                get_or_none,
                what,
                lambda: self._ml_client.online_deployments.get(
                    name=deployment_name, endpoint_name=endpoint_name
                ),
                attempts=1,  # this retry loop is the deployer's own
            )
        except PhiFinetuneError as exc:
            if isinstance(exc.__cause__, HttpResponseError):
                return None
            raise
        return None if remote is None else state_text(remote.provisioning_state) or None

    def _wait(self, poller: LROPoller[Any], *, what: str, timeout: float) -> Any:
        """Wait for an LRO poller, bounded by ``timeout``, with progress; its result."""
        start = self._clock()
        deadline = start + timeout
        bar = progress_bar(desc=f"waiting for {what}", unit="s")
        shown = 0.0
        try:
            while not poller.done():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise WaitTimeoutError(
                        f"{what} was not ready after {timeout:g} s; raise wait_timeout_s, or "
                        "check its state in the Azure ML studio"
                    )
                poller.wait(timeout=min(self._poll_interval_s, remaining))
                elapsed = self._clock() - start
                bar.update(max(0.0, elapsed - shown))
                shown = elapsed
                logger.debug("%s: still waiting after %.0f s", what, elapsed)
            return poller.result()
        finally:
            bar.close()

    def _fail(
        self,
        endpoint_name: str,
        spec: DeploymentSpec,
        exc: BaseException,
        *,
        observer: ResourceObserver,
        stage: str = "deploying",
    ) -> None:
        deployment_name = spec.deployment_name
        lines = self._log_lines(endpoint_name, deployment_name, spec.log_lines)
        if isinstance(exc, _StateError):
            reason = f"it ended in state {exc.state!r}"
        else:
            # HttpResponseError and the SDK's exceptions carry the service's words in .message.
            text = redact(str(getattr(exc, "message", None) or exc)).strip()
            reason = (text.splitlines() or [type(exc).__name__])[0][:600].rstrip(".")
        cleanup = self._cleanup(endpoint_name, spec.keep_on_failure, observer, deployment_name)
        raise DeploymentError(
            f"{stage} {deployment_name!r} on endpoint {endpoint_name!r} failed: {reason}. "
            f"{cleanup} Common causes: no quota for the instance type (request more in the "
            "Azure portal), an instance type the model cannot run on, or a container that was "
            "not healthy in time (raise liveness_initial_delay).",
            log_lines=lines,
        ) from exc

    def _log_lines(self, endpoint_name: str, deployment_name: str, lines: int) -> list[str]:
        if lines <= 0:
            return []
        try:
            text = self._ml_client.online_deployments.get_logs(
                name=deployment_name, endpoint_name=endpoint_name, lines=lines
            )
        except Exception as exc:  # best effort: the error being raised matters more
            logger.warning(
                "could not read the logs of deployment %s: %s", deployment_name, type(exc).__name__
            )
            return []
        return [redact(line) for line in str(text or "").splitlines()[-lines:]]

    def _cleanup(
        self,
        endpoint_name: str,
        keep_on_failure: bool,
        observer: ResourceObserver | None,
        deployment_name: str | None = None,
    ) -> str:
        if keep_on_failure:
            return (
                f"The endpoint {endpoint_name!r} was kept (keep_on_failure=True) and bills "
                f"until you delete it: `phi-finetune teardown RUN_ID`."
            )
        try:
            delete_online_endpoint(self._ml_client, endpoint_name)
        except Exception as exc:
            logger.error(
                "endpoint %s could not be deleted after the failure: %s",
                endpoint_name,
                type(exc).__name__,
            )
            return (
                f"Deleting endpoint {endpoint_name!r} failed too: delete it in the Azure ML "
                "studio or with `phi-finetune teardown RUN_ID`, since it bills while it exists."
            )
        if observer is not None:
            if deployment_name is not None:
                observer.deleted("deployment", deployment_name)
            observer.deleted("endpoint", endpoint_name)
        return f"The endpoint {endpoint_name!r} was deleted (pass keep_on_failure=True to keep it)."


class _StateError(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def _merge_spec(spec: DeploymentSpec | None, settings: dict[str, Any]) -> DeploymentSpec:
    unknown = sorted(set(settings) - _SPEC_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"unknown deployment setting(s) {', '.join(unknown)}; the settings are the fields "
            f"of DeploymentSpec: {', '.join(sorted(_SPEC_FIELDS))}",
            key=unknown[0],
        )
    base = DeploymentSpec() if spec is None else spec
    return attrs.evolve(base, **settings) if settings else base
