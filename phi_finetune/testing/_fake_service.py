"""``FakeAzureML``: a stateful in-process fake of the Azure ML REST surface.

While active it replaces ``azure.core.pipeline.transport.RequestsTransport.send`` and ``.sleep``
at class level, so every client built on azure-core's requests transport (azure-ai-ml, the blob
storage client, registry discovery) talks to it instead of the network. The state lives in a
``FakeStore``; route handlers see only that store, this class is the user-facing API over it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from phi_finetune.testing import _catalog
from phi_finetune.testing._dispatch import Dispatcher, all_routes
from phi_finetune.testing._fake_knobs import FakeRealismKnobs
from phi_finetune.testing._fake_serverless import FakeServerlessKnobs
from phi_finetune.testing._forward import Forward
from phi_finetune.testing._http import FakeRequest
from phi_finetune.testing._scope import FakeScope
from phi_finetune.testing._scoring import Scorer, echo_scorer
from phi_finetune.testing._state import DeploymentScript, Fault, JobScript, JobState
from phi_finetune.testing._storage_sleep import StorageSleepPatch
from phi_finetune.testing._store import FakeStore
from phi_finetune.testing._tokens import FakeCredential
from phi_finetune.testing._transport import TransportPatch

if TYPE_CHECKING:
    from azure.ai.ml import MLClient


__all__ = ["FakeAzureML"]

_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})

_active_lock = threading.Lock()
_active: FakeAzureML | None = None


class FakeAzureML(FakeRealismKnobs, FakeServerlessKnobs):
    """A fake Azure ML service that the real ``azure-ai-ml`` talks to, in process.

    Use it as a context manager (or through the ``fake_azureml`` pytest fixture)::

        with FakeAzureML() as fake:
            ml = fake.workspace_client()
            fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
            assert ml.compute.get("gpu-cluster").size == "Standard_NC24ads_A100_v4"

    ``seed=True`` (the default) adds the ``azureml`` registry's ``chat_completion_pipeline``,
    Phi-4 8 (live) and ``Phi-3-mini-4k-instruct`` 15, both as published (Phi-3 archived and
    retired; ``add_reference_model(published_lifecycle=False)`` serves it live), GPU VM sizes,
    and generous quotas named as the service names them (``set_usage``, ``set_regional_quota``).
    """

    subscription_id = Forward[str]("_scope")
    resource_group = Forward[str]("_scope")
    workspace_name = Forward[str]("_scope")
    location = Forward[str]("_scope")
    registry_subscription_id = Forward[str]("_scope")
    registry_resource_group = Forward[str]("_scope")
    storage_account = Forward[str]("_scope")
    storage_container = Forward[str]("_scope")
    lro_polls = Forward[int](
        "_store", "How many in-progress answers a long-running operation gives before it finishes."
    )
    retry_after_s = Forward[float](
        "_store", "``Retry-After`` of long-running operations (skipped by the patched sleep)."
    )
    cancel_polls = Forward[int](
        "_store", "How many polls a cancelled job reads ``CancelRequested`` before ``Canceled``."
    )
    page_size = Forward[int](
        "_store", "Items per page of a list reply; more items come behind a ``nextLink``."
    )
    name_reservation_s = Forward[float](
        "_store", "How long (fake-clock seconds) a deleted endpoint's name stays reserved."
    )
    check_job_outputs = Forward[bool](
        "_store", "Refuse models registered from outputs of a missing or unfinished job."
    )
    keys_issued = Forward[list[str]](
        "_store", "Every endpoint key ever issued, deleted endpoints' included (for leak scans)."
    )
    unrouted = Forward[list[FakeRequest]](
        "_dispatcher",
        "Requests no route answered (they got a 501); a test may assert this stays empty.",
    )
    scoring_calls = Forward[list[tuple[str, str | None, Any]]](
        "_store", "``(endpoint, deployment or None, request JSON)`` of every accepted scoring call."
    )

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
        self._scope = FakeScope(
            subscription_id=subscription_id,
            resource_group=resource_group,
            workspace_name=workspace_name,
            location=location,
            registry_subscription_id=registry_subscription_id,
            registry_resource_group=registry_resource_group,
        )
        self._store = FakeStore(self._scope)
        self._dispatcher = Dispatcher(self._store, all_routes())
        self.sleeps: list[float] = []
        """Every sleep the SDK asked the transport for (skipped, but recorded)."""
        self._credential = FakeCredential()
        self._dispatcher.auth_check = self._deny_bad_token
        self._patch = TransportPatch()
        self._storage_sleep = StorageSleepPatch()
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
        return self._patch.applied

    def start(self) -> None:
        """Patch the transport (what ``with`` does on enter)."""
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("another FakeAzureML is already active; stop it first")
            _active = self
        self._patch.apply(self._dispatcher.send, self._skip_sleep)
        self._storage_sleep.apply(self._skip_sleep)

    def stop(self) -> None:
        """Undo the patches and restore the environment (what ``with`` does on exit)."""
        global _active
        if not self._patch.applied:
            return
        # A caller that gave up on an LROPoller (a wait timeout) leaves azure-core's polling
        # thread running; once the transport is restored its next poll would reach the real
        # management.azure.com. Ending the operations first lets those threads stop here.
        self._store.abandon_operations()
        self._patch.join_pollers(timeout_s=5.0)
        self._patch.restore()
        self._storage_sleep.restore()
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
        return self._scope.api_host

    @property
    def api_url(self) -> str:
        """Data-plane root (``https://<location>.api.azureml.ms/``)."""
        return self._scope.api_url

    @property
    def discovery_url(self) -> str:
        return self._scope.discovery_url

    @property
    def workspace_id(self) -> str:
        return self._scope.workspace_id

    @property
    def blob_account_url(self) -> str:
        return self._scope.blob_account_url

    def scoring_uri(self, endpoint_name: str) -> str:
        return self._scope.scoring_uri(endpoint_name)

    def studio_url(self, job_name: str) -> str:
        return self._scope.studio_url(job_name)

    def next_id(self) -> int:
        return self._store.next_id()

    # ------------------------------------------------------------------ requests

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request the fake received, in order (a copy; headers are redacted)."""
        return self._dispatcher.requests

    def find_requests(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        *,
        host_contains: str | None = None,
        route: str | None = None,
    ) -> list[FakeRequest]:
        """Recorded requests filtered by method, a path substring, host substring or route name."""
        return self._dispatcher.find(method, path_contains, host_contains, route)

    def clear_requests(self) -> None:
        self._dispatcher.clear()

    def raw_header(self, name: str) -> str | None:
        """An unredacted header of the request being answered (for auth checks in routes)."""
        return self._store.raw_header(name)

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
        read_timeout: bool = False,
    ) -> Fault:
        """Make the next ``times`` requests matching ``method`` + ``url_pattern`` fail.

        ``url_pattern`` is a regular expression searched in the full URL; ``method=None`` matches
        any method; ``times=None`` fails every matching request. ``status`` defaults to 500 (400
        with ``quota=True``). ``retry_after`` sets the ``Retry-After`` header (seconds).
        ``connection_reset=True`` raises a connection reset instead of answering,
        ``read_timeout=True`` a read timeout (the request was sent, no answer came). ``body`` (a
        JSON value, ``str`` or ``bytes``) replaces the Azure-shaped error body. ``quota=True``
        answers a quota-exceeded error. Returns the ``Fault`` (``.hits`` counts its uses).
        """
        fault = Fault.build(
            method,
            url_pattern,
            status=status,
            times=times,
            retry_after=retry_after,
            connection_reset=connection_reset,
            body=body,
            code=code,
            message=message,
            quota=quota,
            subscription_id=self.subscription_id,
            read_timeout=read_timeout,
        )
        self._dispatcher.add_fault(fault)
        return fault

    def clear_faults(self) -> None:
        self._dispatcher.clear_faults()

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
        return self._store.begin_operation(final=final, error=error, on_done=on_done, polls=polls)

    # ------------------------------------------------------------------ seeding

    def _seed_defaults(self) -> None:
        self.add_component(
            _catalog.CHAT_COMPLETION_COMPONENT,
            _catalog.CHAT_COMPLETION_VERSION,
            inputs=_catalog.chat_completion_inputs(),
            outputs=_catalog.chat_completion_outputs(),
            display_name="Chat Completion Pipeline",
        )
        phi4 = _catalog.phi4_model_record()
        meta = {k: phi4[k] for k in ("tags", "system_metadata", "archived")}
        self.add_model(phi4["name"], phi4["version"], **meta)
        self.add_reference_model()
        self.add_maas_models()
        for name, (vcpus, gpus, family, memory) in _catalog.DEFAULT_VM_SIZES.items():
            self.add_vm_size(name, vcpus, gpus, family, memory)
            if self._store.get_usage(family) is None:
                self.set_usage(family, 0, _catalog.DEFAULT_FAMILY_LIMIT)
        low_priority = _catalog.DEFAULT_REGIONAL_LOW_PRIORITY_LIMIT
        self.set_regional_quota(
            _catalog.DEFAULT_REGIONAL_DEDICATED_LIMIT, low_priority_limit=low_priority
        )

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
            self._store,
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
        self._store.put_registry_asset("models", registry, name, str(version), body)
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
            self._store,
            registry,
            name,
            str(version),
            inputs={k: dict(v) for k, v in (inputs or {}).items()},
            outputs={k: dict(v) for k, v in (outputs or {}).items()},
            component_type=component_type,
            display_name=display_name,
            archived=archived,
        )
        self._store.put_registry_asset("components", registry, name, str(version), body)
        return body

    def add_registry(self, name: str) -> None:
        self._store.add_registry(name)

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
            self._scope,
            name,
            vm_size,
            state=state,
            min_instances=min_instances,
            max_instances=max_instances,
            tier=tier,
            errors=errors,
        )
        self._store.put_compute(name, body)
        return body

    def add_vm_size(
        self, name: str, vcpus: int, gpus: int, family: str, memory_gb: float = 0.0
    ) -> None:
        """Add (or replace) a VM size that ``compute.list_sizes()`` reports."""
        from phi_finetune.testing._routes_workspace import vm_size_body

        self._store.put_vm_size(name, vm_size_body(name, vcpus, gpus, family, memory_gb))

    def set_usage(
        self,
        family: str,
        current: int,
        limit: int,
        *,
        naming: Literal["display", "key"] | None = None,
    ) -> None:
        """Set a VM family's dedicated vCPU usage and quota (``compute.list_usage()``); ``family``
        is the vmSizes key in any case, ``naming`` the entry's name form (default: see
        ``set_usage_naming``; docs/testing.md, "Contract")."""
        from phi_finetune.testing._routes_workspace import put_family_usage

        put_family_usage(self._store, family, current, limit, naming=naming)

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
        script = JobScript.build(
            outcome,
            statuses=statuses,
            failing_step=failing_step,
            error_message=error_message,
            logs=logs,
            name=name,
        )
        self._store.add_job_script(script)

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
        script = DeploymentScript.build(
            outcome,
            logs,
            polls=self.lro_polls if polls is None else polls,
            error_message=error_message,
            endpoint=endpoint,
            name=name,
        )
        self._store.add_deployment_script(script)

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
        self._store.scorer = scorer if scorer is not None else echo_scorer(shape)

    @property
    def scorer(self) -> Scorer:
        return self._store.scorer

    # ------------------------------------------------------------------ state views

    @property
    def computes(self) -> Mapping[str, dict[str, Any]]:
        return self._store.computes

    @property
    def endpoints(self) -> Mapping[str, dict[str, Any]]:
        return self._store.endpoints

    @property
    def deployments(self) -> Mapping[tuple[str, str], dict[str, Any]]:
        """Keyed by ``(endpoint_name, deployment_name)``."""
        return self._store.deployments

    @property
    def models(self) -> Mapping[tuple[str, str], dict[str, Any]]:
        """Workspace models keyed by ``(name, version)``."""
        return self._store.assets("models")

    @property
    def registry_models(self) -> Mapping[tuple[str, str, str], dict[str, Any]]:
        """Registry models keyed by ``(registry, name, version)``."""
        return self._store.registry_assets("models")

    @property
    def registry_components(self) -> Mapping[tuple[str, str, str], dict[str, Any]]:
        return self._store.registry_assets("components")

    @property
    def data_assets(self) -> Mapping[tuple[str, str], dict[str, Any]]:
        """Data assets keyed by ``(name, version)``."""
        return self._store.assets("data")

    @property
    def jobs(self) -> Mapping[str, JobState]:
        """Submitted jobs by name (``.status``, ``.body``, ``.script``)."""
        return self._store.jobs

    @property
    def blobs(self) -> Mapping[str, bytes]:
        """Uploaded blobs keyed by ``<container>/<path>``."""
        return self._store.blobs

    def endpoint_keys(self, endpoint_name: str) -> tuple[str, str]:
        """``(primary, secondary)`` key of an endpoint (for tests that score directly)."""
        keys = self._store.endpoint_keys(endpoint_name)
        if keys is None:
            raise KeyError(endpoint_name)
        return keys

    def secrets_issued(self) -> list[str]:
        """Every endpoint key and access token the fake handed out, for tests that scan logs,
        reprs and files for leaks."""
        return [*self.keys_issued, *self._credential.tokens_issued]

    def billable(self) -> list[str]:
        """Names of things that would still cost money: endpoints and running jobs not asked
        to stop."""
        return self._store.billable()

    def __iter__(self) -> Iterator[FakeRequest]:
        return iter(self.requests)

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"FakeAzureML({self.workspace_name!r}, {state}, {len(self.requests)} requests)"

    def _skip_sleep(self, duration: float) -> None:
        self.sleeps.append(duration)
        self._store.record_sleep(duration)
