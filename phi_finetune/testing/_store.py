"""``FakeStore``: the fake service's state, behind the methods its route handlers use.

Route handlers (``_routes_*.py``) receive a ``FakeStore`` and never see ``FakeAzureML``; the
fake's public helpers (``add_compute``, ``script_job``, the state views) write and read the same
store. Stored values are the REST bodies the routes answer with; handlers may update a body in
place (a provisioning state, traffic) while they hold ``lock``.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Literal

from phi_finetune.testing._maas_store import ServerlessStore
from phi_finetune.testing._scope import FakeScope
from phi_finetune.testing._scoring import Scorer, echo_scorer
from phi_finetune.testing._state import DeploymentScript, Hold, JobScript, JobState, Operation

__all__ = ["AssetKind", "FakeStore", "RegistryKind"]

Body = dict[str, Any]
AssetKind = Literal["models", "data"]
"""Workspace asset kinds, as they appear in ARM paths."""
RegistryKind = Literal["models", "components"]
"""Registry asset kinds, as they appear in registry paths."""

_FINAL_JOB_STATES = ("Completed", "Failed", "Canceled")


def _newest_first(bodies: list[Body]) -> list[Body]:
    return sorted(bodies, key=lambda b: str(b["systemData"]["createdAt"]), reverse=True)


class FakeStore:
    """Workspaces' resources, registry assets, jobs, endpoints, blobs and LRO operations."""

    def __init__(self, scope: FakeScope) -> None:
        self.scope = scope
        self.lock = threading.RLock()
        """Held while a request is answered and while a helper changes state."""
        self.lro_polls = 2
        """How many in-progress answers a long-running operation gives before it finishes."""
        self.retry_after_s = 1.0
        """``Retry-After`` of long-running operations (the fake's patched sleep skips it)."""
        self.cancel_polls = 2
        """How many polls a cancelled job reads ``CancelRequested`` before ``Canceled`` (the
        service takes a while to stop a pipeline's steps)."""
        self.page_size = 100
        """Items per page of a list reply; more items come behind a ``nextLink``."""
        self.name_reservation_s = 600.0
        """How long (fake-clock seconds) a deleted endpoint's name stays reserved (the service
        does not hand a just-deleted name out again at once)."""
        self.check_job_outputs = True
        """Refuse models registered from outputs of a missing or unfinished job (as Azure does)."""
        self.slept_s = 0.0
        """Sum of the skipped sleeps: the fake clock runs ahead of real time by this much."""
        self.keys_issued: list[str] = []
        """Every endpoint key ever issued, deleted endpoints' included (for leak scans)."""
        self.scoring_calls: list[tuple[str, str | None, Any]] = []
        """``(endpoint, deployment or None, request JSON)`` of every accepted scoring call."""
        self.scorer: Scorer = echo_scorer("output")
        self._ids = itertools.count(1)
        self._raw_headers: Mapping[str, str] = {}
        self._computes: dict[str, Body] = {}
        self._vm_sizes: dict[str, Body] = {}
        self._usages: dict[str, Body] = {}
        self._registries: set[str] = {"azureml"}
        self._registry_assets: dict[RegistryKind, dict[tuple[str, str, str], Body]] = {
            "models": {},
            "components": {},
        }
        self._assets: dict[AssetKind, dict[tuple[str, str], Body]] = {"models": {}, "data": {}}
        self._jobs: dict[str, JobState] = {}
        self._job_scripts: deque[JobScript] = deque()
        self._child_runs: dict[str, tuple[str, str | None]] = {}
        self._endpoints: dict[str, Body] = {}
        self._endpoint_keys: dict[str, tuple[str, str]] = {}
        self._deployments: dict[tuple[str, str], Body] = {}
        self._deployment_logs: dict[tuple[str, str], list[str]] = {}
        self._deployment_scripts: deque[DeploymentScript] = deque()
        self._blobs: dict[str, bytes] = {}
        self._blob_metadata: dict[str, dict[str, str]] = {}
        self._staged_blocks: dict[tuple[str, str], bytes] = {}
        self._operations: dict[str, Operation] = {}
        self._busy: dict[str, Operation] = {}
        self._holds: list[Hold] = []
        self._reserved_names: dict[str, float] = {}
        self._request: tuple[str, str] = ("", "")
        self.serverless = ServerlessStore(self.lock, lambda key: self.keys_issued.append(key))
        """Serverless endpoints and marketplace subscriptions (``_routes_serverless``)."""
        self.serverless_needs_hub = True
        """Refuse serverless fine-tuning and endpoints outside a hub-based project."""

    def next_id(self) -> int:
        """A number unique within this fake (ids, creation stamps)."""
        return next(self._ids)

    # ------------------------------------------------------------------ the request answered

    @contextmanager
    def serving(
        self, raw_headers: Mapping[str, str], method: str = "", url: str = ""
    ) -> Iterator[None]:
        """Make ``raw_header`` answer from ``raw_headers`` while one request is answered."""
        self._raw_headers = raw_headers
        self._request = (method, url)
        try:
            yield
        finally:
            self._raw_headers = {}
            self._request = ("", "")

    def raw_header(self, name: str) -> str | None:
        """An unredacted header of the request being answered (for auth checks in routes)."""
        lowered = name.lower()
        for key, value in self._raw_headers.items():
            if key.lower() == lowered:
                return value
        return None

    # ------------------------------------------------------------------ compute, sizes, quota

    @property
    def computes(self) -> Mapping[str, Body]:
        return MappingProxyType(self._computes)

    def get_compute(self, name: str) -> Body | None:
        return self._computes.get(name)

    def list_computes(self) -> list[Body]:
        return list(self._computes.values())

    def put_compute(self, name: str, body: Body) -> bool:
        """Store a cluster's body; returns whether one of that name existed."""
        with self.lock:
            existed = name in self._computes
            self._computes[name] = body
        return existed

    def delete_compute(self, name: str) -> None:
        with self.lock:
            self._computes.pop(name, None)

    def put_vm_size(self, name: str, body: Body) -> None:
        with self.lock:
            self._vm_sizes[name] = body

    def list_vm_sizes(self) -> list[Body]:
        return list(self._vm_sizes.values())

    def find_vm_size(self, name: str) -> Body | None:
        """A VM size by name, ignoring case (as Azure compares them)."""
        return next((s for n, s in self._vm_sizes.items() if n.lower() == name.lower()), None)

    def put_usage(self, family: str, body: Body) -> None:
        with self.lock:
            self._usages[family] = body

    def get_usage(self, family: str) -> Body | None:
        return self._usages.get(family)

    def list_usages(self) -> list[Body]:
        return list(self._usages.values())

    # ------------------------------------------------------------------ registries

    def add_registry(self, name: str) -> None:
        with self.lock:
            self._registries.add(name)

    def has_registry(self, name: str) -> bool:
        return name in self._registries

    def registry_assets(self, kind: RegistryKind) -> Mapping[tuple[str, str, str], Body]:
        """Registry models or components keyed by ``(registry, name, version)``."""
        return MappingProxyType(self._registry_assets[kind])

    def put_registry_asset(
        self, kind: RegistryKind, registry: str, name: str, version: str, body: Body
    ) -> None:
        """Store a registry asset version (and the registry, when it is new)."""
        with self.lock:
            self._registries.add(registry)
            self._registry_assets[kind][(registry, name, version)] = body

    def get_registry_asset(
        self, kind: RegistryKind, registry: str, name: str, version: str
    ) -> Body | None:
        return self._registry_assets[kind].get((registry, name, version))

    def registry_versions(self, kind: RegistryKind, registry: str, name: str) -> list[Body]:
        """Every version of a registry asset, newest created first."""
        store = self._registry_assets[kind]
        return _newest_first([b for (r, n, _), b in store.items() if r == registry and n == name])

    # ------------------------------------------------------------------ workspace assets

    def assets(self, kind: AssetKind) -> Mapping[tuple[str, str], Body]:
        """Workspace models or data assets keyed by ``(name, version)``."""
        return MappingProxyType(self._assets[kind])

    def get_asset(self, kind: AssetKind, name: str, version: str) -> Body | None:
        return self._assets[kind].get((name, version))

    def put_asset(self, kind: AssetKind, name: str, version: str, body: Body) -> None:
        with self.lock:
            self._assets[kind][(name, version)] = body

    def asset_versions(self, kind: AssetKind, name: str) -> list[Body]:
        """Every version of a workspace asset, newest created first."""
        return _newest_first([b for (n, _), b in self._assets[kind].items() if n == name])

    def asset_names(self, kind: AssetKind) -> list[str]:
        return sorted({n for (n, _) in self._assets[kind]})

    def next_asset_version(self, kind: AssetKind, name: str) -> str:
        """One more than the highest numeric version of ``name`` (``"1"`` for a new asset)."""
        numbers = [int(v) for (n, v) in self._assets[kind] if n == name and v.isdigit()]
        return str(max(numbers, default=0) + 1)

    # ------------------------------------------------------------------ blobs

    @property
    def blobs(self) -> Mapping[str, bytes]:
        return MappingProxyType(self._blobs)

    def get_blob(self, key: str) -> bytes | None:
        return self._blobs.get(key)

    def blob_metadata(self, key: str) -> dict[str, str]:
        return dict(self._blob_metadata.get(key, {}))

    def put_blob(self, key: str, content: bytes, metadata: Mapping[str, str]) -> None:
        with self.lock:
            self._blobs[key] = content
            self._blob_metadata[key] = dict(metadata)

    def set_blob_metadata(self, key: str, metadata: Mapping[str, str]) -> None:
        with self.lock:
            self._blob_metadata[key] = dict(metadata)

    def stage_block(self, key: str, block_id: str, content: bytes) -> None:
        """Keep an uncommitted block of a block blob (``comp=block``)."""
        with self.lock:
            self._staged_blocks[(key, block_id)] = content

    def commit_blocks(self, key: str, block_ids: list[str], metadata: Mapping[str, str]) -> bytes:
        """Assemble staged blocks into the blob (``comp=blocklist``); returns its content."""
        with self.lock:
            content = b"".join(self._staged_blocks.pop((key, b), b"") for b in block_ids)
            self.put_blob(key, content, metadata)
        return content

    def list_blobs(self, container: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """``(name in container, content)`` of the blobs under ``prefix``, sorted by name."""
        found = []
        for key, content in sorted(self._blobs.items()):
            cont, _, name = key.partition("/")
            if cont == container and name.startswith(prefix):
                found.append((name, content))
        return found

    # ------------------------------------------------------------------ jobs

    @property
    def jobs(self) -> Mapping[str, JobState]:
        return MappingProxyType(self._jobs)

    def get_job(self, name: str) -> JobState | None:
        return self._jobs.get(name)

    def list_jobs(self) -> list[JobState]:
        """Every job, newest submitted first (the service's order)."""
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def put_job(self, job: JobState) -> None:
        with self.lock:
            self._jobs[job.name] = job

    def add_child_run(self, run_id: str, root: str, step: str | None) -> None:
        """Record a child run of job ``root``: its pipeline node (``step=None``) or a step."""
        with self.lock:
            self._child_runs[run_id] = (root, step)

    def child_run(self, run_id: str) -> tuple[JobState, str | None] | None:
        """``(root job, step or None for the pipeline node)`` of a child run id."""
        found = self._child_runs.get(run_id)
        if found is None or found[0] not in self._jobs:
            return None
        return self._jobs[found[0]], found[1]

    def add_job_script(self, script: JobScript) -> None:
        with self.lock:
            self._job_scripts.append(script)

    def take_job_script(self, job_name: str) -> JobScript | None:
        """The script for ``job_name``, else the next unnamed one (removed); ``None`` if none."""
        with self.lock:
            chosen = next((s for s in self._job_scripts if s.name == job_name), None)
            if chosen is None:
                chosen = next((s for s in self._job_scripts if s.name is None), None)
            if chosen is not None:
                self._job_scripts.remove(chosen)
        return chosen

    # ------------------------------------------------------------------ endpoints

    @property
    def endpoints(self) -> Mapping[str, Body]:
        return MappingProxyType(self._endpoints)

    def get_endpoint(self, name: str) -> Body | None:
        return self._endpoints.get(name)

    def find_endpoint(self, host_label: str) -> str | None:
        """The endpoint whose name matches a scoring host's label, ignoring case."""
        return next((n for n in self._endpoints if n.lower() == host_label.lower()), None)

    def list_endpoints(self) -> list[Body]:
        return list(self._endpoints.values())

    def put_endpoint(self, name: str, body: Body) -> None:
        """Store an endpoint's body; a new endpoint gets a fresh primary and secondary key."""
        with self.lock:
            if name not in self._endpoint_keys:
                keys = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
                self._endpoint_keys[name] = keys
                self.keys_issued.extend(keys)
            self._endpoints[name] = body

    def endpoint_keys(self, name: str) -> tuple[str, str] | None:
        """``(primary, secondary)`` key of an endpoint, ``None`` when it does not exist."""
        return self._endpoint_keys.get(name)

    def regenerate_key(self, name: str, which: Literal["primary", "secondary"]) -> None:
        with self.lock:
            primary, secondary = self._endpoint_keys[name]
            new = secrets.token_urlsafe(32)
            self.keys_issued.append(new)
            self._endpoint_keys[name] = (new, secondary) if which == "primary" else (primary, new)

    def delete_endpoint(self, name: str) -> None:
        """Remove an endpoint with its keys and all its deployments."""
        with self.lock:
            if self._endpoints.pop(name, None) is not None:
                self.reserve_name(name)
            self._endpoint_keys.pop(name, None)
            for key in [k for k in self._deployments if k[0] == name]:
                self.delete_deployment(*key)

    def billable(self) -> list[str]:
        """Names of things that would still cost money: endpoints and jobs that run on with
        nobody asking them to stop (a job whose cancel was requested is on its way out)."""
        left = [f"endpoint:{name}" for name in self._endpoints]
        left += [
            f"job:{name}"
            for name, job in self._jobs.items()
            if job.status not in _FINAL_JOB_STATES and not job.canceled
        ]
        return left + self.serverless.billable()

    # ------------------------------------------------------------------ deployments

    @property
    def deployments(self) -> Mapping[tuple[str, str], Body]:
        return MappingProxyType(self._deployments)

    def get_deployment(self, endpoint: str, name: str) -> Body | None:
        return self._deployments.get((endpoint, name))

    def list_deployments(self, endpoint: str) -> list[Body]:
        return [b for (ep, _), b in self._deployments.items() if ep == endpoint]

    def put_deployment(self, endpoint: str, name: str, body: Body, logs: list[str]) -> bool:
        """Store a deployment's body and container logs; returns whether it existed."""
        with self.lock:
            existed = (endpoint, name) in self._deployments
            self._deployments[(endpoint, name)] = body
            self._deployment_logs[(endpoint, name)] = list(logs)
        return existed

    def deployment_logs(self, endpoint: str, name: str) -> list[str]:
        return list(self._deployment_logs.get((endpoint, name), []))

    def delete_deployment(self, endpoint: str, name: str) -> None:
        with self.lock:
            self._deployments.pop((endpoint, name), None)
            self._deployment_logs.pop((endpoint, name), None)
            # A deployment removed with its endpoint is no longer busy under that name.
            self._busy.pop(f"onlineendpoints/{endpoint}/deployments/{name}".lower(), None)

    def add_deployment_script(self, script: DeploymentScript) -> None:
        with self.lock:
            self._deployment_scripts.append(script)

    def take_deployment_script(self, endpoint: str, name: str) -> DeploymentScript | None:
        """The first script that fits this deployment (removed); ``None`` if none does."""
        with self.lock:
            chosen = next(
                (
                    s
                    for s in self._deployment_scripts
                    if s.endpoint in (None, endpoint) and s.name in (None, name)
                ),
                None,
            )
            if chosen is not None:
                self._deployment_scripts.remove(chosen)
        return chosen

    def record_scoring_call(self, endpoint: str, deployment: str | None, payload: Any) -> None:
        with self.lock:
            self.scoring_calls.append((endpoint, deployment, payload))

    # ------------------------------------------------------------------ long-running operations

    def begin_operation(
        self,
        *,
        final: str = "Succeeded",
        error: dict[str, Any] | None = None,
        on_done: Callable[[], None] | None = None,
        polls: int | None = None,
        resource: str | None = None,
        action: str = "Updating",
    ) -> tuple[str, str]:
        """Register a long-running operation; returns ``(op_id, status URL)``.

        It answers ``polls`` (default ``lro_polls``) in-progress polls, then ``final``; ``on_done``
        runs once, at the first final poll. While it runs, ``resource`` is busy (409 to a second
        operation); a matching ``hold`` keeps it in progress until released.
        """
        with self.lock:
            op_id = f"fake-op-{self.next_id()}"
            operation = Operation(
                op_id=op_id,
                polls=self.lro_polls if polls is None else polls,
                final=final,
                error=error,
                on_done=on_done,
                resource=resource,
                action=action,
                hold=self.hold_for(*self._request),
            )
            self._operations[op_id] = operation
            if resource is not None:
                self._busy[resource.lower()] = operation
        return op_id, self.operation_url(op_id)

    def operation_url(self, op_id: str, *, result: bool = False) -> str:
        """The status (``Azure-AsyncOperation``) or result (``Location``) URL of an operation."""
        kind = "mfeOperationResults" if result else "mfeOperationsStatus"
        suffix = f"/{kind}/{op_id}?api-version=2024-10-01"
        return f"https://management.azure.com{self.scope.location_id(suffix)}"

    def get_operation(self, op_id: str) -> Operation | None:
        return self._operations.get(op_id)

    def busy(self, resource: str) -> Operation | None:
        """The unfinished operation on ``resource`` (``onlineEndpoints/x``), if any."""
        operation = self._busy.get(resource.lower())
        if operation is None or operation.done:
            return None
        return operation

    def tick(self, resource: str) -> None:
        """Time passes for ``resource``: a GET of it moves its operation one poll along."""
        with self.lock:
            operation = self.busy(resource)
            if operation is not None:
                operation.advance()

    def abandon_operations(self) -> None:
        """End every unfinished operation on its next poll (the service is going away)."""
        with self.lock:
            for hold in self._holds:
                hold.release()
            for operation in self._operations.values():
                operation.abandon()

    # ------------------------------------------------------------------ holds and the clock

    def add_hold(self, hold: Hold) -> Hold:
        with self.lock:
            self._holds.append(hold)
        return hold

    def hold_for(self, method: str, url: str) -> Hold | None:
        """The active hold matching the request being answered (recording the catch)."""
        if not method:
            return None
        for hold in self._holds:
            if hold.matches(method, url):
                hold.caught.append(f"{method} {url}")
                return hold
        return None

    def now(self) -> float:
        """The fake clock: real monotonic time plus every sleep the fake skipped."""
        return time.monotonic() + self.slept_s

    def record_sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept_s += max(0.0, seconds)

    def reserve_name(self, name: str) -> None:
        """Keep a deleted endpoint's name from reuse for ``name_reservation_s``."""
        if self.name_reservation_s > 0:
            with self.lock:
                self._reserved_names[name.lower()] = self.now() + self.name_reservation_s

    def reserved_for(self, name: str) -> float | None:
        """Seconds until a reserved name is free again; ``None`` when it is free."""
        until = self._reserved_names.get(name.lower())
        if until is None:
            return None
        left = until - self.now()
        if left <= 0:
            with self.lock:
                self._reserved_names.pop(name.lower(), None)
            return None
        return left

    def release_name(self, name: str) -> None:
        with self.lock:
            self._reserved_names.pop(name.lower(), None)
