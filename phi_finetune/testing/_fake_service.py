"""``FakeAzureML``: a stateful in-process fake of the Azure ML REST surface.

While active it replaces ``azure.core.pipeline.transport.RequestsTransport.send`` and ``.sleep``
at class level, so every client built on azure-core's requests transport (azure-ai-ml, the blob
storage client, registry discovery) talks to it instead of the network.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from phi_finetune.testing import _catalog
from phi_finetune.testing._http import (
    FakeRequest,
    Reply,
    azure_error,
    parse_request,
    to_transport_response,
)
from phi_finetune.testing._router import Route
from phi_finetune.testing._scoring import Scorer, echo_scorer
from phi_finetune.testing._state import DeploymentScript, Fault, JobScript, JobState, Operation
from phi_finetune.testing._tokens import FakeCredential

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

__all__ = ["FakeAzureML"]

_ENV_TO_CLEAR = ("AZUREML_CURRENT_CLOUD", "ARM_CLOUD_METADATA_URL")
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_FAULT_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "AuthorizationFailed",
    404: "ResourceNotFound",
    408: "RequestTimeout",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

_active_lock = threading.Lock()
_active: FakeAzureML | None = None


def _all_routes() -> list[Route]:
    from phi_finetune.testing import (
        _routes_assets,
        _routes_endpoints,
        _routes_jobs,
        _routes_registry,
        _routes_workspace,
    )

    return [
        *_routes_workspace.ROUTES,
        *_routes_registry.ROUTES,
        *_routes_jobs.ROUTES,
        *_routes_assets.ROUTES,
        *_routes_endpoints.ROUTES,
    ]


class FakeAzureML:
    """A fake Azure ML service that the real ``azure-ai-ml`` talks to, in process.

    Use it as a context manager (or through the ``fake_azureml`` pytest fixture)::

        with FakeAzureML() as fake:
            ml = fake.workspace_client()
            fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
            assert ml.compute.get("gpu-cluster").size == "Standard_NC24ads_A100_v4"

    ``seed=True`` (the default) adds the ``azureml`` registry's ``chat_completion_pipeline``
    component, a ``Phi-3-mini-4k-instruct`` model (version 15, not archived, allow lists in both
    tags and system metadata), common GPU VM sizes and generous quotas.
    """

    def __init__(
        self,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000001",
        resource_group: str = "rg-phi-fake",
        workspace_name: str = "ws-phi-fake",
        location: str = "eastus",
        registry_subscription_id: str = "00000000-0000-0000-0000-000000000002",
        registry_resource_group: str = "registry-rg",
        seed: bool = True,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace_name = workspace_name
        self.location = location
        self.registry_subscription_id = registry_subscription_id
        self.registry_resource_group = registry_resource_group
        self.storage_account = "fakestorageacct"
        self.storage_container = "azureml-blobstore-fake"

        self._lock = threading.RLock()
        self._routes = _all_routes()
        self._requests: list[FakeRequest] = []
        self.unrouted: list[FakeRequest] = []
        """Requests no route answered (they got a 501); a test may assert this stays empty."""
        self.sleeps: list[float] = []
        """Every sleep the SDK asked the transport for (skipped, but recorded)."""
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._credential = FakeCredential()

        self._computes: dict[str, dict[str, Any]] = {}
        self._vm_sizes: dict[str, dict[str, Any]] = {}
        self._usages: dict[str, dict[str, Any]] = {}
        self._registries: set[str] = {"azureml"}
        self._registry_models: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._registry_components: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._models: dict[tuple[str, str], dict[str, Any]] = {}
        self._model_containers: dict[str, dict[str, Any]] = {}
        self._data: dict[tuple[str, str], dict[str, Any]] = {}
        self._data_containers: dict[str, dict[str, Any]] = {}
        self._components: dict[tuple[str, str], dict[str, Any]] = {}
        self._environments: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs: dict[str, JobState] = {}
        self._endpoints: dict[str, dict[str, Any]] = {}
        self._endpoint_keys: dict[str, tuple[str, str]] = {}
        self.keys_issued: list[str] = []
        """Every endpoint key ever issued, deleted endpoints' included (for leak scans)."""
        self._deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self._deployment_logs: dict[tuple[str, str], list[str]] = {}
        self._blobs: dict[str, bytes] = {}
        self._blob_metadata: dict[str, dict[str, str]] = {}
        self._operations: dict[str, Operation] = {}
        self._job_scripts: deque[JobScript] = deque()
        self._deployment_scripts: deque[DeploymentScript] = deque()
        self._scorer: Scorer = echo_scorer("output")
        self.scoring_calls: list[tuple[str, str | None, Any]] = []
        """``(endpoint, deployment or None, request JSON)`` of every accepted scoring call."""
        self.lro_polls = 0
        """How many in-progress answers a long-running operation gives before it finishes."""

        self._raw_headers: Mapping[str, str] = {}
        self._saved: dict[str, Any] = {}
        self._saved_env: dict[str, str] = {}
        self._clients: list[Any] = []
        self._threads_at_start: set[threading.Thread] = set()
        if seed:
            self._seed_defaults()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeAzureML:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def active(self) -> bool:
        return bool(self._saved)

    def start(self) -> None:
        """Patch the transport (what ``with`` does on enter)."""
        global _active
        from azure.ai.ml.operations._run_history_constants import RunHistoryConstants
        from azure.core.pipeline.transport import RequestsTransport

        with _active_lock:
            if _active is not None:
                raise RuntimeError("another FakeAzureML is already active; stop it first")
            _active = self
        fake = self

        def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            return fake._send(request, **kwargs)

        def sleep(transport: Any, duration: float) -> None:
            fake.sleeps.append(float(duration))

        import requests.adapters

        from phi_finetune.testing._requests_bridge import make_adapter_send

        real_adapter_send = requests.adapters.HTTPAdapter.__dict__["send"]
        self._threads_at_start = set(threading.enumerate())
        self._saved = {
            "adapter_send": real_adapter_send,
            "send": RequestsTransport.__dict__["send"],
            "sleep": RequestsTransport.__dict__.get("sleep"),
            "min": RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN,
            "max": RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX,
        }
        RequestsTransport.send = send
        RequestsTransport.sleep = sleep
        requests.adapters.HTTPAdapter.send = make_adapter_send(  # type: ignore[method-assign]
            lambda request: fake._send(request), real_adapter_send
        )
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN = 0
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX = 0
        for name in _ENV_TO_CLEAR:
            if name in os.environ:
                self._saved_env[name] = os.environ.pop(name)

    def _end_abandoned_pollers(self, timeout_s: float = 5.0) -> None:
        """Finish operations nobody waited for and let their poller threads see it.

        A caller that gives up on an ``LROPoller`` (a wait timeout) leaves azure-core's polling
        thread running; once the transport is restored its next poll would reach the real
        ``management.azure.com``. Ending the operations first lets those threads stop here.
        """
        for operation in self._operations.values():
            operation.abandon()
        deadline = time.monotonic() + timeout_s
        for thread in set(threading.enumerate()) - self._threads_at_start:
            if thread.name.startswith("LROPoller") and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """Undo the patches and restore the environment (what ``with`` does on exit)."""
        global _active
        if not self._saved:
            return
        self._end_abandoned_pollers()
        import requests.adapters
        from azure.ai.ml.operations._run_history_constants import RunHistoryConstants
        from azure.core.pipeline.transport import RequestsTransport

        requests.adapters.HTTPAdapter.send = self._saved["adapter_send"]  # type: ignore[method-assign]
        RequestsTransport.send = self._saved["send"]
        if self._saved["sleep"] is None:
            del RequestsTransport.sleep
        else:
            RequestsTransport.sleep = self._saved["sleep"]
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MIN = self._saved["min"]
        RunHistoryConstants._WAIT_COMPLETION_POLLING_INTERVAL_MAX = self._saved["max"]
        self._saved = {}
        for name in _ENV_TO_CLEAR:
            os.environ.pop(name, None)
        os.environ.update(self._saved_env)
        self._saved_env = {}
        with _active_lock:
            _active = None

    # ------------------------------------------------------------------ clients

    def credential(self) -> FakeCredential:
        """The credential the fake's clients use; tokens are JWTs (``aud`` = scope root)."""
        return self._credential

    def workspace_client(self, **kwargs: Any) -> MLClient:
        """A real ``MLClient`` for the fake workspace (extra kwargs go to ``MLClient``; no
        upload progress bars unless ``show_progress=True``)."""
        from azure.ai.ml import MLClient

        self._require_active()
        kwargs.setdefault("show_progress", False)
        client = MLClient(
            self._credential,
            subscription_id=self.subscription_id,
            resource_group_name=self.resource_group,
            workspace_name=self.workspace_name,
            **kwargs,
        )
        os.environ.pop("AZUREML_CURRENT_CLOUD", None)
        return client

    def registry_client(self, registry_name: str = "azureml", **kwargs: Any) -> MLClient:
        """A real ``MLClient`` for a registry (its constructor calls registry discovery)."""
        from azure.ai.ml import MLClient

        self._require_active()
        kwargs.setdefault("show_progress", False)
        client = MLClient(self._credential, registry_name=registry_name, **kwargs)
        os.environ.pop("AZUREML_CURRENT_CLOUD", None)
        return client

    def _require_active(self) -> None:
        if not self.active:
            raise RuntimeError("FakeAzureML is not active: use `with FakeAzureML() as fake:`")

    # ------------------------------------------------------------------ URLs

    @property
    def api_host(self) -> str:
        return f"{self.location}.api.azureml.ms"

    @property
    def api_url(self) -> str:
        """Data-plane root (``https://<location>.api.azureml.ms/``)."""
        return f"https://{self.api_host}/"

    @property
    def discovery_url(self) -> str:
        return f"{self.api_url}discovery"

    @property
    def workspace_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )

    @property
    def blob_account_url(self) -> str:
        return f"https://{self.storage_account}.blob.core.windows.net"

    def scoring_uri(self, endpoint_name: str) -> str:
        return f"https://{endpoint_name}.{self.location}.inference.ml.azure.com/score"

    def studio_url(self, job_name: str) -> str:
        # azure-ai-ml appends "&tid=<tenant>" itself, as it does to the real service's URL
        return f"https://ml.azure.com/runs/{job_name}?wsid={self.workspace_id}"

    def next_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ requests

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request the fake received, in order (a copy; headers are redacted)."""
        with self._lock:
            return list(self._requests)

    def find_requests(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        *,
        host_contains: str | None = None,
        route: str | None = None,
    ) -> list[FakeRequest]:
        """Recorded requests filtered by method, a path substring, host substring or route name."""
        found = []
        for req in self.requests:
            if method is not None and req.method != method.upper():
                continue
            if path_contains is not None and path_contains.lower() not in req.path.lower():
                continue
            if host_contains is not None and host_contains.lower() not in req.host:
                continue
            if route is not None and req.route != route:
                continue
            found.append(req)
        return found

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self.unrouted.clear()

    def _send(self, request: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import ServiceResponseError

        with self._lock:
            fake_req, raw_headers = parse_request(request)
            for fault in self._faults:
                if fault.matches(fake_req.method, fake_req.url):
                    fault.hits += 1
                    if fault.connection_reset:
                        self._requests.append(_with(fake_req, "fault", None))
                        raise ServiceResponseError(
                            "Connection aborted: ConnectionResetError(104, 'Connection reset by "
                            "peer') (injected by FakeAzureML)",
                            error=ConnectionResetError(104, "Connection reset by peer"),
                        )
                    reply = Reply(
                        status=fault.reply.status,
                        json=fault.reply.json,
                        body=fault.reply.body,
                        headers=dict(fault.reply.headers),
                    )
                    self._requests.append(_with(fake_req, "fault", reply.status))
                    return to_transport_response(request, reply, stream=bool(kwargs.get("stream")))
            reply, route_name = self._dispatch(fake_req, raw_headers)
            recorded = _with(fake_req, route_name, reply.status)
            self._requests.append(recorded)
            if route_name is None:
                self.unrouted.append(recorded)
            return to_transport_response(request, reply, stream=bool(kwargs.get("stream")))

    def _dispatch(
        self, req: FakeRequest, raw_headers: Mapping[str, str]
    ) -> tuple[Reply, str | None]:
        target = req.host + req.path
        self._raw_headers = raw_headers
        for r in self._routes:
            if r.method != req.method and r.method != "*":
                continue
            match = r.pattern.fullmatch(target)
            if match is None:
                continue
            return r.handler(self, req, match), r.name
        return (
            azure_error(
                501,
                "NotImplementedInFake",
                f"FakeAzureML has no route for {req.method} {req.host}{req.path}",
            ),
            None,
        )

    def raw_header(self, name: str) -> str | None:
        """An unredacted header of the request being answered (for auth checks in routes)."""
        lowered = name.lower()
        for key, value in self._raw_headers.items():
            if key.lower() == lowered:
                return value
        return None

    # ------------------------------------------------------------------ faults

    def inject_fault(
        self,
        method: str | None,
        url_pattern: str,
        *,
        status: int | None = None,
        times: int | None = 1,
        retry_after: float | None = None,
        connection_reset: bool = False,
        body: Any = None,
        code: str | None = None,
        message: str | None = None,
        quota: bool = False,
    ) -> Fault:
        """Make the next ``times`` requests matching ``method`` + ``url_pattern`` fail.

        ``url_pattern`` is a regular expression searched in the full URL; ``method=None`` matches
        any method; ``times=None`` fails every matching request. ``status`` defaults to 500 (400
        with ``quota=True``). ``retry_after`` sets the ``Retry-After`` header (seconds).
        ``connection_reset=True`` raises a connection reset instead of answering. ``body`` (a
        JSON value, ``str`` or ``bytes``) replaces the Azure-shaped error body. ``quota=True``
        answers a quota-exceeded error. Returns the ``Fault`` (``.hits`` counts its uses).
        """
        if status is None:
            status = 400 if quota else 500
        if quota:
            code = code or "QuotaExceeded"
            message = message or (
                "Not enough quota available for the requested VM size in subscription "
                f"{self.subscription_id}. Current usage/limit: 96/96. Additional needed: 24. "
                "Please request a quota increase."
            )
        code = code or _FAULT_CODES.get(status, "Error")
        message = message or f"Injected fault: {status} {code}."
        if body is None:
            reply = azure_error(status, code, message)
        elif isinstance(body, bytes):
            reply = Reply(status=status, body=body)
        elif isinstance(body, str):
            reply = Reply(status=status, body=body.encode(), headers={"content-type": "text/plain"})
        else:
            reply = Reply(status=status, json=body)
        if retry_after is not None:
            reply.headers["Retry-After"] = f"{retry_after:g}"
        fault = Fault(
            method=method.upper() if method else None,
            pattern=re.compile(url_pattern),
            status=status,
            times=times,
            retry_after=retry_after,
            connection_reset=connection_reset,
            reply=reply,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @staticmethod
    def is_transient(status: int) -> bool:
        """Whether azure-core's retry policy retries this status."""
        return status in _TRANSIENT

    # ------------------------------------------------------------------ LRO

    def new_operation(
        self,
        *,
        final: str = "Succeeded",
        error: dict[str, Any] | None = None,
        on_done: Callable[[], None] | None = None,
        polls: int | None = None,
    ) -> tuple[str, str]:
        """Register a long-running operation; returns ``(op_id, status URL)``."""
        op_id = f"fake-op-{self.next_id()}"
        self._operations[op_id] = Operation(
            op_id=op_id,
            polls=self.lro_polls if polls is None else polls,
            final=final,
            error=error,
            on_done=on_done,
        )
        url = (
            f"https://management.azure.com/subscriptions/{self.subscription_id}/providers/"
            f"Microsoft.MachineLearningServices/locations/{self.location}/mfeOperationsStatus/"
            f"{op_id}?api-version=2024-10-01"
        )
        return op_id, url

    # ------------------------------------------------------------------ seeding

    def _seed_defaults(self) -> None:
        self.add_component(
            _catalog.CHAT_COMPLETION_COMPONENT,
            _catalog.CHAT_COMPLETION_VERSION,
            inputs=_catalog.chat_completion_inputs(),
            outputs=_catalog.chat_completion_outputs(),
            display_name="Chat Completion Pipeline",
        )
        phi3 = _catalog.PHI3_MODEL
        self.add_model(
            phi3["name"],
            phi3["version"],
            tags=dict(phi3["tags"]),
            system_metadata=dict(phi3["system_metadata"]),
        )
        for name, (vcpus, gpus, family, memory) in _catalog.DEFAULT_VM_SIZES.items():
            self.add_vm_size(name, vcpus, gpus, family, memory)
            if family not in self._usages:
                self.set_usage(family, 0, 200)

    def add_model(
        self,
        name: str,
        version: str | int,
        *,
        registry: str = "azureml",
        tags: Mapping[str, str] | None = None,
        system_metadata: Mapping[str, Any] | None = None,
        archived: bool = False,
        labels: tuple[str, ...] | list[str] | None = None,
        description: str | None = None,
        properties: Mapping[str, str] | None = None,
        model_type: str = "mlflow_model",
    ) -> dict[str, Any]:
        """Add a model version to a registry; returns its REST body.

        ``labels`` are kept for information; ``label="latest"`` resolves to the highest version
        that is not archived (or the highest archived one when all are archived, like Azure).
        """
        from phi_finetune.testing._routes_registry import registry_model_body

        body = registry_model_body(
            self,
            registry,
            name,
            str(version),
            tags=dict(tags or {}),
            system_metadata=dict(system_metadata or {}),
            archived=archived,
            description=description,
            properties=dict(properties or {}),
            model_type=model_type,
            labels=list(labels or []),
        )
        with self._lock:
            self._registries.add(registry)
            self._registry_models[(registry, name, str(version))] = body
        return body

    def add_component(
        self,
        name: str,
        version: str | int,
        *,
        inputs: Mapping[str, Mapping[str, Any]] | None = None,
        outputs: Mapping[str, Mapping[str, Any]] | None = None,
        registry: str = "azureml",
        component_type: str = "pipeline",
        display_name: str | None = None,
        archived: bool = False,
    ) -> dict[str, Any]:
        """Add a component version to a registry (inputs use the component YAML shape)."""
        from phi_finetune.testing._routes_registry import registry_component_body

        body = registry_component_body(
            self,
            registry,
            name,
            str(version),
            inputs={k: dict(v) for k, v in (inputs or {}).items()},
            outputs={k: dict(v) for k, v in (outputs or {}).items()},
            component_type=component_type,
            display_name=display_name,
            archived=archived,
        )
        with self._lock:
            self._registries.add(registry)
            self._registry_components[(registry, name, str(version))] = body
        return body

    def add_registry(self, name: str) -> None:
        with self._lock:
            self._registries.add(name)

    def add_compute(
        self,
        name: str,
        vm_size: str,
        *,
        state: str = "Succeeded",
        min_instances: int = 0,
        max_instances: int = 1,
        tier: str = "Dedicated",
        errors: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Add an AmlCompute cluster; ``state`` is its provisioning state (e.g. ``Failed``)."""
        from phi_finetune.testing._routes_workspace import compute_body

        body = compute_body(
            self,
            name,
            vm_size,
            state=state,
            min_instances=min_instances,
            max_instances=max_instances,
            tier=tier,
            errors=errors,
        )
        with self._lock:
            self._computes[name] = body
        return body

    def add_vm_size(
        self, name: str, vcpus: int, gpus: int, family: str, memory_gb: float = 0.0
    ) -> None:
        """Add (or replace) a VM size that ``compute.list_sizes()`` reports."""
        with self._lock:
            self._vm_sizes[name] = {
                "name": name,
                "family": family,
                "vCPUs": vcpus,
                "gpus": gpus,
                "osVhdSizeMB": 1047552,
                "maxResourceVolumeMB": 688128,
                "memoryGB": memory_gb,
                "lowPriorityCapable": True,
                "premiumIO": True,
                "supportedComputeTypes": ["Compute Instance", "AmlCompute"],
            }

    def set_usage(self, family: str, current: int, limit: int) -> None:
        """Set the vCPU usage and quota of a VM family (``compute.list_usage()``)."""
        with self._lock:
            self._usages[family] = {
                "id": (
                    f"/subscriptions/{self.subscription_id}/providers/"
                    f"Microsoft.MachineLearningServices/locations/{self.location}/usages/{family}"
                ),
                "amlWorkspaceLocation": self.location,
                "type": "Microsoft.MachineLearningServices/totalcores/usages",
                "unit": "Count",
                "currentValue": current,
                "limit": limit,
                "name": {"value": family, "localizedValue": f"{family} Cores"},
            }

    def script_job(
        self,
        outcome: Literal["Completed", "Failed", "Canceled"] = "Completed",
        *,
        statuses: list[str] | None = None,
        failing_step: str | None = None,
        error_message: str | None = None,
        logs: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        """Script the next submitted pipeline job (or the one called ``name``).

        ``statuses`` is the sequence ``jobs.get``/``stream`` walk through, one step per poll;
        by default ``NotStarted -> Running -> <outcome>``. A failed job names ``failing_step``
        (default ``chat_completion_finetune``) and ``error_message``.
        """
        if statuses is None:
            statuses = ["NotStarted", "Running", outcome]
        if statuses[-1] != outcome:
            statuses = [*statuses, outcome]
        if outcome == "Failed":
            failing_step = failing_step or "chat_completion_finetune"
            error_message = error_message or (
                f"Execution failed. User process in step {failing_step!r} exited with status 1."
            )
        if logs is None:
            logs = [f"step {s}: started" for s in ("model_import", "preprocess", "finetune")]
            if outcome == "Failed":
                logs.append(f"Error: {error_message}")
        with self._lock:
            self._job_scripts.append(
                JobScript(outcome, list(statuses), failing_step, error_message, list(logs), name)
            )

    def script_deployment(
        self,
        outcome: Literal["Succeeded", "Failed"] = "Succeeded",
        logs: list[str] | None = None,
        *,
        error_message: str | None = None,
        polls: int | None = None,
        endpoint: str | None = None,
        name: str | None = None,
    ) -> None:
        """Script the next online deployment create (optionally only for ``endpoint``/``name``).

        A failed deployment stays behind in state ``Failed`` (as on Azure) with its ``logs``.
        """
        if outcome == "Failed":
            error_message = error_message or (
                "ResourceNotReady: User container has crashed or terminated."
            )
        if logs is None:
            logs = ["Starting inference server", "Loading model"]
            logs.append("Model loaded" if outcome == "Succeeded" else f"ERROR {error_message}")
        with self._lock:
            self._deployment_scripts.append(
                DeploymentScript(
                    outcome,
                    list(logs),
                    error_message,
                    self.lro_polls if polls is None else polls,
                    endpoint,
                    name,
                )
            )

    def set_scorer(
        self,
        scorer: Scorer | None = None,
        *,
        shape: Literal["output", "list"] = "output",
    ) -> None:
        """Answer scoring calls with ``scorer(request_json, deployment_name)``.

        The scorer returns a JSON value (sent with status 200) or a ``Reply``. ``None`` restores
        the deterministic echo scorer, answering ``{"output": ...}`` (``shape="output"``) or
        ``[{"0": ...}]`` (``shape="list"``).
        """
        self._scorer = scorer if scorer is not None else echo_scorer(shape)

    @property
    def scorer(self) -> Scorer:
        return self._scorer

    # ------------------------------------------------------------------ state views

    @property
    def computes(self) -> Mapping[str, dict[str, Any]]:
        return MappingProxyType(self._computes)

    @property
    def endpoints(self) -> Mapping[str, dict[str, Any]]:
        return MappingProxyType(self._endpoints)

    @property
    def deployments(self) -> Mapping[tuple[str, str], dict[str, Any]]:
        """Keyed by ``(endpoint_name, deployment_name)``."""
        return MappingProxyType(self._deployments)

    @property
    def models(self) -> Mapping[tuple[str, str], dict[str, Any]]:
        """Workspace models keyed by ``(name, version)``."""
        return MappingProxyType(self._models)

    @property
    def registry_models(self) -> Mapping[tuple[str, str, str], dict[str, Any]]:
        """Registry models keyed by ``(registry, name, version)``."""
        return MappingProxyType(self._registry_models)

    @property
    def registry_components(self) -> Mapping[tuple[str, str, str], dict[str, Any]]:
        return MappingProxyType(self._registry_components)

    @property
    def data_assets(self) -> Mapping[tuple[str, str], dict[str, Any]]:
        """Data assets keyed by ``(name, version)``."""
        return MappingProxyType(self._data)

    @property
    def jobs(self) -> Mapping[str, JobState]:
        """Submitted jobs by name (``.status``, ``.body``, ``.script``)."""
        return MappingProxyType(self._jobs)

    @property
    def blobs(self) -> Mapping[str, bytes]:
        """Uploaded blobs keyed by ``<container>/<path>``."""
        return MappingProxyType(self._blobs)

    def endpoint_keys(self, endpoint_name: str) -> tuple[str, str]:
        """``(primary, secondary)`` key of an endpoint (for tests that score directly)."""
        return self._endpoint_keys[endpoint_name]

    def secrets_issued(self) -> list[str]:
        """Every endpoint key and access token the fake handed out, for tests that scan logs,
        reprs and files for leaks."""
        return [*self.keys_issued, *self._credential.tokens_issued]

    def billable(self) -> list[str]:
        """Names of things that would still cost money: endpoints and running jobs."""
        left = [f"endpoint:{name}" for name in self._endpoints]
        left += [
            f"job:{name}"
            for name, job in self._jobs.items()
            if job.status not in ("Completed", "Failed", "Canceled")
        ]
        return left

    def __iter__(self) -> Iterator[FakeRequest]:
        return iter(self.requests)

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"FakeAzureML({self.workspace_name!r}, {state}, {len(self._requests)} requests)"


def _with(req: FakeRequest, route: str | None, status: int | None) -> FakeRequest:
    import attrs

    return attrs.evolve(req, route=route, status=status)
