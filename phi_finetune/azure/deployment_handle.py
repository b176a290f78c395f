"""``DeploymentHandle``: a deployment in progress (status, done, wait, result -> Endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phi_finetune.azure.boundary import translate
from phi_finetune.endpoint import Endpoint, sdk_output_to_stderr
from phi_finetune.errors import ConfigurationError, PhiFinetuneError, WaitTimeoutError
from phi_finetune.observer import NullObserver

if TYPE_CHECKING:
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core.polling import LROPoller

    from phi_finetune.azure.deployer import EndpointDeployer
    from phi_finetune.azure.deployment_spec import DeploymentSpec
    from phi_finetune.observer import ResourceObserver

__all__ = ["DeploymentHandle", "state_text"]


class DeploymentHandle:
    """A deployment in progress, a poller in the Azure SDK's sense.

    :meth:`result` drives the remaining steps (endpoint ready, deployment created and healthy,
    all traffic to it), each bounded by the timeout, and returns the :class:`Endpoint`; a failure
    is raised again by every later call. Built by :meth:`EndpointDeployer.begin_deploy`.
    """

    def __init__(
        self,
        deployer: EndpointDeployer,
        model_ref: str,
        spec: DeploymentSpec,
        *,
        endpoint_name: str,
        existing: ManagedOnlineEndpoint | None,
        endpoint_poller: LROPoller[Any] | None,
        timeout_s: float,
        observer: ResourceObserver | None = None,
    ) -> None:
        self._deployer = deployer
        self._model_ref = model_ref
        self._spec = spec
        self._endpoint_name = endpoint_name
        self._existing = existing
        self._endpoint_poller = endpoint_poller
        self._timeout_s = timeout_s
        self._observer: ResourceObserver = NullObserver() if observer is None else observer
        self._result: Endpoint | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"DeploymentHandle(endpoint={self._endpoint_name!r}, "
            f"deployment={self._spec.deployment_name!r}, done={self.done()})"
        )

    @property
    def endpoint_name(self) -> str:
        return self._endpoint_name

    @property
    def deployment_name(self) -> str:
        return self._spec.deployment_name

    @property
    def spec(self) -> DeploymentSpec:
        return self._spec

    def done(self) -> bool:
        """Whether :meth:`result` has finished, successfully or not (no request)."""
        return self._result is not None or self._error is not None

    def status(self) -> str:
        """``Succeeded`` or ``Failed`` once :meth:`result` finished. Before that, the service's
        provisioning state of the deployment (of the endpoint before the deployment exists),
        e.g. ``Creating`` or ``Failed``; ``InProgress`` when the service is done with it but
        :meth:`result` still has steps to drive (creating the deployment, sending traffic)."""
        if self._result is not None:
            return "Succeeded"
        if self._error is not None:
            return "Failed"
        state = self._deployer._deployment_state(self._endpoint_name, self.deployment_name)
        if state is None:
            remote = self._deployer._get_endpoint(self._endpoint_name)
            state = None if remote is None else state_text(remote.provisioning_state)
        if not state or state == "succeeded":
            return "InProgress"
        return state.capitalize()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the deployment is ready (see :meth:`result`)."""
        self.result(timeout)

    def result(self, timeout: float | None = None) -> Endpoint:
        """The ready :class:`Endpoint`; waits at most ``timeout`` seconds per step (default:
        the spec's ``wait_timeout_s``, else the deployer's), then raises
        :class:`~phi_finetune.errors.WaitTimeoutError` (the endpoint is deleted unless
        ``keep_on_failure``)."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        if timeout is not None and timeout <= 0:
            raise ConfigurationError("timeout must be > 0", key="timeout")
        try:
            with sdk_output_to_stderr():
                self._result = self._finish(self._timeout_s if timeout is None else timeout)
        except Exception as exc:
            self._error = exc
            raise
        return self._result

    def _finish(self, timeout: float) -> Endpoint:
        deployer, spec, name = self._deployer, self._spec, self._endpoint_name
        observer = self._observer
        created: Any = None
        if self._endpoint_poller is not None:
            try:
                created = deployer._wait(
                    self._endpoint_poller, what=f"endpoint {name}", timeout=timeout
                )
            except Exception as exc:
                deployer._cleanup(name, spec.keep_on_failure, observer)
                if isinstance(exc, PhiFinetuneError):
                    raise
                raise translate(f"create endpoint {name!r}", exc) from exc
            self._endpoint_poller = None
        try:
            updated = deployer._deploy_on(
                name,
                self._model_ref,
                spec,
                timeout=timeout,
                reuse=self._existing is not None,
                observer=observer,
                endpoint=created,
            )
        except WaitTimeoutError:
            deployer._cleanup(name, spec.keep_on_failure, observer, spec.deployment_name)
            raise
        traffic = getattr(updated, "traffic", None)
        if (
            isinstance(getattr(updated, "scoring_uri", None), str)
            and isinstance(traffic, dict)
            and traffic.get(spec.deployment_name) == 100
        ):
            # The traffic update's reply is the endpoint as it is now: no need to read it again.
            return Endpoint._from_remote(
                deployer._ml_client,
                name,
                updated,
                deployment_name=spec.deployment_name,
                observer=observer,
            )
        return Endpoint.from_name(
            deployer._ml_client,
            name,
            deployment_name=spec.deployment_name,
            observer=observer,
        )


def state_text(state: Any) -> str:
    """A provisioning state (string or SDK enum) in lower case; ``""`` when unknown."""
    value = getattr(state, "value", state)
    return str(value).lower() if isinstance(value, str) else ""
