"""Deploy a registered model to a managed online endpoint (workflow steps 13-14).

Everything that can be checked offline is checked before the first request: the endpoint and
deployment names, the instance type against the model's inference allow list, the instance
count, probe and timeout values. Resources are reported through callbacks as soon as the
service accepts them (before any waiting), so a run journal never loses track of them. A
failed deployment raises :class:`~phi_finetune.errors.DeploymentError` with the last lines of
its logs and deletes the endpoint unless ``keep_on_failure=True``.
"""

from __future__ import annotations

import ast
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from phi_finetune._redact import redact
from phi_finetune.azure.registrar import RegisteredModel
from phi_finetune.endpoint import Endpoint, delete_online_endpoint, sdk_output_to_stderr
from phi_finetune.errors import (
    ComputeNotAllowedError,
    ConfigurationError,
    DeploymentError,
    EndpointError,
    PhiFinetuneError,
    ServiceError,
    WaitTimeoutError,
)
from phi_finetune.names import (
    RUN_ID_TAG,
    generate_endpoint_name,
    validate_deployment_name,
    validate_endpoint_name,
)
from phi_finetune.progress import progress_bar

__all__ = [
    "DEFAULT_INSTANCE_TYPE",
    "MAX_REQUEST_TIMEOUT_MS",
    "EndpointDeployer",
    "check_instance_type",
    "parse_allow_list",
]

logger = logging.getLogger(__name__)

DEFAULT_INSTANCE_TYPE = "Standard_NC6s_v3"
#: The service's upper bound for ``request_settings.request_timeout_ms``.
MAX_REQUEST_TIMEOUT_MS = 180_000
ENDPOINT_TAG_CREATOR = "created_by"
ENDPOINT_TAG_RUN = RUN_ID_TAG

ResourceCallback = Callable[[str, str], object]


def parse_allow_list(value: Sequence[str] | str | None) -> list[str] | None:
    """An allow list from a list, a Python/JSON list literal (as in model tags) or a
    comma-separated string; ``None`` when there is none."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ConfigurationError(
                    f"inference allow list {text[:80]!r} is not a list literal; pass a list of "
                    "VM sizes such as ['Standard_NC6s_v3']",
                    key="inference_allow_list",
                ) from exc
            return [str(item).strip() for item in parsed if str(item).strip()]
        return [item.strip() for item in text.split(",") if item.strip()]
    return [str(item).strip() for item in value if str(item).strip()]


def check_instance_type(instance_type: str, allow_list: Sequence[str] | str | None) -> str:
    """Return ``instance_type`` if the allow list (case-insensitive) permits it, else raise
    :class:`~phi_finetune.errors.ComputeNotAllowedError` listing what is allowed."""
    allowed = parse_allow_list(allow_list)
    if not isinstance(instance_type, str) or not instance_type.strip():
        raise ConfigurationError(
            "instance_type must be a VM size such as 'Standard_NC6s_v3'", key="instance_type"
        )
    if allowed is None:
        logger.info("no inference allow list known; not checking instance type %s", instance_type)
        return instance_type
    if instance_type.lower() not in {item.lower() for item in allowed}:
        listed = ", ".join(allowed) if allowed else "(empty)"
        raise ComputeNotAllowedError(
            f"instance_type={instance_type!r} is not in the model's inference allow list: "
            f"{listed}. Deploy on one of those sizes (instance_type=...)."
        )
    return instance_type


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
    """Creates, attaches to and deletes managed online endpoints through an ``MLClient``.

    Callbacks, each ``fn(kind, name)`` with kind ``endpoint`` or ``deployment``:
    ``on_creating`` right before a create request, ``on_created`` as soon as the service
    accepted it (before waiting), ``on_deleted`` after a deletion. Values given to
    :meth:`deploy` override those given here.
    """

    def __init__(
        self,
        ml_client: Any,
        *,
        wait_timeout_s: float = 3600.0,
        poll_interval_s: float = 10.0,
        on_creating: ResourceCallback | None = None,
        on_created: ResourceCallback | None = None,
        on_deleted: ResourceCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ml_client = ml_client
        self._wait_timeout_s = wait_timeout_s
        self._poll_interval_s = poll_interval_s
        self._on_creating = on_creating
        self._on_created = on_created
        self._on_deleted = on_deleted
        self._clock = clock

    # ------------------------------------------------------------------ public API
    def deploy(
        self,
        model: RegisteredModel | str,
        *,
        endpoint_name: str | None = None,
        deployment_name: str = "demo",
        instance_type: str = DEFAULT_INSTANCE_TYPE,
        instance_count: int = 1,
        inference_allow_list: Sequence[str] | str | None = None,
        liveness_initial_delay: int = 600,
        request_timeout_ms: int = 90_000,
        keep_on_failure: bool = False,
        reuse_endpoint: bool = False,
        wait_timeout_s: float | None = None,
        log_lines: int = 50,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        description: str | None = None,
        on_creating: ResourceCallback | None = None,
        on_created: ResourceCallback | None = None,
        on_deleted: ResourceCallback | None = None,
    ) -> Endpoint:
        """Create a key-auth endpoint, deploy ``model`` on it, send it 100% of the traffic and
        wait (bounded) until it is healthy; returns the :class:`Endpoint` handle.

        ``endpoint_name`` defaults to a fresh ``ultrachat-completion-<suffix>``. An endpoint
        that already exists is an error unless ``reuse_endpoint=True`` (used when resuming a
        run that created it); a deployment of the same name that already succeeded is then
        reused too.
        """
        with sdk_output_to_stderr():
            return self._deploy(
                model,
                endpoint_name=endpoint_name,
                deployment_name=deployment_name,
                instance_type=instance_type,
                instance_count=instance_count,
                inference_allow_list=inference_allow_list,
                liveness_initial_delay=liveness_initial_delay,
                request_timeout_ms=request_timeout_ms,
                keep_on_failure=keep_on_failure,
                reuse_endpoint=reuse_endpoint,
                wait_timeout_s=wait_timeout_s,
                log_lines=log_lines,
                tags=tags,
                run_id=run_id,
                description=description,
                on_creating=on_creating,
                on_created=on_created,
                on_deleted=on_deleted,
            )

    def _deploy(
        self,
        model: RegisteredModel | str,
        *,
        endpoint_name: str | None,
        deployment_name: str,
        instance_type: str,
        instance_count: int,
        inference_allow_list: Sequence[str] | str | None,
        liveness_initial_delay: int,
        request_timeout_ms: int,
        keep_on_failure: bool,
        reuse_endpoint: bool,
        wait_timeout_s: float | None,
        log_lines: int,
        tags: Mapping[str, str] | None,
        run_id: str | None,
        description: str | None,
        on_creating: ResourceCallback | None,
        on_created: ResourceCallback | None,
        on_deleted: ResourceCallback | None,
    ) -> Endpoint:
        on_creating = on_creating or self._on_creating
        on_created = on_created or self._on_created
        on_deleted = on_deleted or self._on_deleted
        # --- every offline check, before the first request
        model_ref = _model_reference(model)
        if endpoint_name is not None:
            validate_endpoint_name(endpoint_name)
        validate_deployment_name(deployment_name)
        check_instance_type(instance_type, inference_allow_list)
        _check_int("instance_count", instance_count, low=1)
        _check_int("liveness_initial_delay", liveness_initial_delay, low=0)
        _check_int("request_timeout_ms", request_timeout_ms, low=1, high=MAX_REQUEST_TIMEOUT_MS)
        _check_int("log_lines", log_lines, low=0)
        timeout = self._wait_timeout_s if wait_timeout_s is None else wait_timeout_s
        if timeout <= 0:
            raise ConfigurationError("wait_timeout_s must be > 0", key="wait_timeout_s")

        from azure.ai.ml.entities import (
            ManagedOnlineDeployment,
            ManagedOnlineEndpoint,
            OnlineRequestSettings,
            ProbeSettings,
        )

        # --- the endpoint
        name, existing = self._choose_endpoint(endpoint_name, reuse_endpoint=reuse_endpoint)
        endpoint_tags = {ENDPOINT_TAG_CREATOR: "phi_finetune", **dict(tags or {})}
        if run_id:
            endpoint_tags[ENDPOINT_TAG_RUN] = run_id
        if existing is None:
            endpoint = ManagedOnlineEndpoint(
                name=name,
                auth_mode="key",
                description=description or "phi_finetune chat completion endpoint",
                tags=endpoint_tags,
            )
            _notify(on_creating, "endpoint", name)
            try:
                poller = self._ml_client.online_endpoints.begin_create_or_update(endpoint)
            except Exception as exc:
                raise _endpoint_error(exc, f"could not create endpoint {name!r}") from exc
            _notify(on_created, "endpoint", name)
            try:
                self._wait(poller, what=f"endpoint {name}", timeout=timeout)
            except Exception as exc:
                self._cleanup(name, keep_on_failure, on_deleted)
                if isinstance(exc, PhiFinetuneError):
                    raise
                raise _endpoint_error(exc, f"endpoint {name!r} could not be created") from exc

        # --- the deployment
        try:
            self._deploy_on(
                name,
                model_ref=model_ref,
                deployment_name=deployment_name,
                instance_type=instance_type,
                instance_count=instance_count,
                liveness_initial_delay=liveness_initial_delay,
                request_timeout_ms=request_timeout_ms,
                timeout=timeout,
                log_lines=log_lines,
                keep_on_failure=keep_on_failure,
                reuse=existing is not None,
                on_creating=on_creating,
                on_created=on_created,
                on_deleted=on_deleted,
                classes=(ManagedOnlineDeployment, OnlineRequestSettings, ProbeSettings),
            )
        except WaitTimeoutError:
            self._cleanup(name, keep_on_failure, on_deleted, deployment_name)
            raise
        return Endpoint.from_azure(
            self._ml_client, name, deployment_name=deployment_name, on_deleted=on_deleted
        )

    def attach(
        self,
        endpoint_name: str,
        *,
        deployment_name: str | None = None,
        on_deleted: ResourceCallback | None = None,
    ) -> Endpoint:
        """A handle on an existing endpoint (its scoring URI and current key are fetched).

        ``deployment_name`` defaults to the deployment receiving most of the traffic.
        """
        validate_endpoint_name(endpoint_name)
        if deployment_name is not None:
            validate_deployment_name(deployment_name)
        return Endpoint.from_azure(
            self._ml_client,
            endpoint_name,
            deployment_name=deployment_name,
            on_deleted=on_deleted or self._on_deleted,
        )

    def delete(self, endpoint_name: str) -> bool:
        """Delete an endpoint and wait; ``False`` when it was already gone (not an error)."""
        validate_endpoint_name(endpoint_name)
        deleted = delete_online_endpoint(self._ml_client, endpoint_name)
        _notify(self._on_deleted, "endpoint", endpoint_name)
        return deleted

    # ------------------------------------------------------------------ internals
    def _choose_endpoint(
        self, endpoint_name: str | None, *, reuse_endpoint: bool
    ) -> tuple[str, Any]:
        if endpoint_name is not None:
            existing = self._get_endpoint(endpoint_name)
            if existing is not None and not reuse_endpoint:
                raise EndpointError(
                    f"endpoint {endpoint_name!r} already exists; score it with "
                    f"`phi-finetune invoke --endpoint {endpoint_name}`, pass "
                    "reuse_endpoint=True to deploy on it, or choose another name"
                )
            return endpoint_name, existing
        for _ in range(5):
            candidate = generate_endpoint_name()
            if self._get_endpoint(candidate) is None:
                return candidate, None
        raise EndpointError(  # pragma: no cover - five random collisions in a row
            "could not find a free endpoint name; pass endpoint_name explicitly"
        )

    def _get_endpoint(self, name: str) -> Any:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            return self._ml_client.online_endpoints.get(name=name)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if getattr(exc, "status_code", None) == 404:
                return None
            raise _endpoint_error(exc, f"could not look up endpoint {name!r}") from exc

    def _deploy_on(
        self,
        endpoint_name: str,
        *,
        model_ref: str,
        deployment_name: str,
        instance_type: str,
        instance_count: int,
        liveness_initial_delay: int,
        request_timeout_ms: int,
        timeout: float,
        log_lines: int,
        keep_on_failure: bool,
        reuse: bool,
        on_creating: ResourceCallback | None,
        on_created: ResourceCallback | None,
        on_deleted: ResourceCallback | None,
        classes: tuple[Any, Any, Any],
    ) -> None:
        deployment_cls, request_settings_cls, probe_cls = classes
        if reuse and self._deployment_state(endpoint_name, deployment_name) == "succeeded":
            logger.info(
                "deployment %s on %s already succeeded; reusing it", deployment_name, endpoint_name
            )
        else:
            deployment = deployment_cls(
                name=deployment_name,
                endpoint_name=endpoint_name,
                model=model_ref,
                instance_type=instance_type,
                instance_count=instance_count,
                liveness_probe=probe_cls(initial_delay=liveness_initial_delay),
                request_settings=request_settings_cls(request_timeout_ms=request_timeout_ms),
            )
            _notify(on_creating, "deployment", deployment_name)
            try:
                poller = self._ml_client.online_deployments.begin_create_or_update(deployment)
                _notify(on_created, "deployment", deployment_name)
                self._wait(poller, what=f"deployment {deployment_name}", timeout=timeout)
                state = self._deployment_state(endpoint_name, deployment_name)
                if state not in (None, "succeeded"):
                    raise _StateError(state)
            except (WaitTimeoutError, KeyboardInterrupt):
                raise
            except Exception as exc:
                self._fail(
                    endpoint_name,
                    deployment_name,
                    exc,
                    keep_on_failure=keep_on_failure,
                    log_lines=log_lines,
                    on_deleted=on_deleted,
                )
        # --- all traffic to the deployment
        try:
            current = self._ml_client.online_endpoints.get(name=endpoint_name)
            current.traffic = {deployment_name: 100}
            self._wait(
                self._ml_client.online_endpoints.begin_create_or_update(current),
                what=f"traffic update of {endpoint_name}",
                timeout=timeout,
            )
        except (WaitTimeoutError, KeyboardInterrupt):
            raise
        except Exception as exc:
            self._fail(
                endpoint_name,
                deployment_name,
                exc,
                keep_on_failure=keep_on_failure,
                log_lines=log_lines,
                on_deleted=on_deleted,
                stage="sending traffic to",
            )

    def _deployment_state(self, endpoint_name: str, deployment_name: str) -> str | None:
        from azure.core.exceptions import HttpResponseError

        try:
            remote = self._ml_client.online_deployments.get(
                name=deployment_name, endpoint_name=endpoint_name
            )
        except HttpResponseError:
            return None
        state = getattr(remote, "provisioning_state", None)
        state = getattr(state, "value", state)
        return str(state).lower() if isinstance(state, str) else None

    def _wait(self, poller: Any, *, what: str, timeout: float) -> Any:
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
        deployment_name: str,
        exc: BaseException,
        *,
        keep_on_failure: bool,
        log_lines: int,
        on_deleted: ResourceCallback | None,
        stage: str = "deploying",
    ) -> None:
        lines = self._log_lines(endpoint_name, deployment_name, log_lines)
        if isinstance(exc, _StateError):
            reason = f"it ended in state {exc.state!r}"
        else:
            text = redact(str(getattr(exc, "message", None) or exc)).strip()
            reason = (text.splitlines() or [type(exc).__name__])[0][:600].rstrip(".")
        cleanup = self._cleanup(endpoint_name, keep_on_failure, on_deleted, deployment_name)
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
        except Exception as exc:
            logger.warning(
                "could not read the logs of deployment %s: %s", deployment_name, type(exc).__name__
            )
            return []
        return [redact(line) for line in str(text or "").splitlines()[-lines:]]

    def _cleanup(
        self,
        endpoint_name: str,
        keep_on_failure: bool,
        on_deleted: ResourceCallback | None,
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
        if deployment_name is not None:
            _notify(on_deleted, "deployment", deployment_name)
        _notify(on_deleted, "endpoint", endpoint_name)
        return f"The endpoint {endpoint_name!r} was deleted (pass keep_on_failure=True to keep it)."


class _StateError(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def _notify(callback: ResourceCallback | None, kind: str, name: str) -> None:
    if callback is not None:
        callback(kind, name)


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}", key=name)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigurationError(f"{name} must be {bound}, got {value}", key=name)


def _endpoint_error(exc: BaseException, what: str) -> PhiFinetuneError:
    if isinstance(exc, PhiFinetuneError):
        return exc
    message = redact(str(getattr(exc, "message", None) or exc)).strip()[:600]
    status = getattr(exc, "status_code", None)
    if status is not None:
        return ServiceError(f"{what}: {message}", status=status)
    return EndpointError(f"{what}: {message}")
