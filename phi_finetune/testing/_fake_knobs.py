"""The realism and test-tool knobs of ``FakeAzureML`` (time, conflict, tokens, server mode,
published shapes), kept apart so the main class stays readable. Mixed into ``FakeAzureML``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from phi_finetune.testing import _catalog
from phi_finetune.testing._http import FakeRequest, Reply
from phi_finetune.testing._state import Fault, Hold

if TYPE_CHECKING:
    from phi_finetune.testing._dispatch import Dispatcher
    from phi_finetune.testing._scope import FakeScope
    from phi_finetune.testing._server import FakeServer
    from phi_finetune.testing._store import FakeStore
    from phi_finetune.testing._tokens import FakeCredential

__all__ = ["FakeRealismKnobs"]


class FakeRealismKnobs:
    """Mixin: every method here works on the state ``FakeAzureML`` sets up."""

    _store: FakeStore
    _dispatcher: Dispatcher
    _scope: FakeScope
    _credential: FakeCredential
    subscription_id: str
    resource_group: str
    workspace_name: str

    add_model: Callable[..., dict[str, Any]]

    # ------------------------------------------------------------------ realism (time, conflict)

    def hold(self, method: str | None, url_pattern: str) -> Hold:
        """Keep matching operations in progress until released.

        A long-running operation (or a job) started by a request matching ``method`` (``None``:
        any) and ``url_pattern`` (a regular expression searched in the full URL) answers
        ``InProgress`` on every poll, and its resource refuses a second operation with 409,
        until ``.release()`` or the end of a ``with fake.hold(...):`` block.
        """
        pattern = re.compile(url_pattern)
        return self._store.add_hold(
            Hold(method=method.upper() if method else None, pattern=pattern)
        )

    def inject_lost_reply(
        self,
        method: str | None,
        url_pattern: str,
        *,
        times: int | None = 1,
        kind: Literal["reset", "timeout"] = "reset",
    ) -> Fault:
        """The service acts on the next ``times`` matching requests, but the reply is lost.

        The fake applies the request (creates, deletes, submits), then the client sees a
        connection reset (``kind="reset"``) or a read timeout (``kind="timeout"``).
        """
        fault = Fault.lost(method, url_pattern, times=times, kind=kind)
        self._dispatcher.add_fault(fault)
        return fault

    def release_endpoint_name(self, name: str) -> None:
        """Free a deleted endpoint's reserved name now (see ``name_reservation_s``)."""
        self._store.release_name(name)

    def endpoint_name_reserved(self, name: str) -> bool:
        """Whether ``name`` is reserved after its endpoint was deleted."""
        return self._store.reserved_for(name) is not None

    def clock(self) -> float:
        """The fake clock (monotonic seconds plus every sleep the fake skipped)."""
        return self._store.now()

    # ------------------------------------------------------------------ tokens

    check_tokens: bool = True
    """Whether ARM and data-plane requests need a valid bearer token (401 otherwise)."""

    def _deny_bad_token(self, req: FakeRequest, raw_headers: Mapping[str, str]) -> Reply | None:
        if not self.check_tokens:
            return None
        from phi_finetune.testing._auth import check_tokens

        return check_tokens(req, raw_headers, self._credential.is_revoked)

    # ------------------------------------------------------------------ server mode

    def serve(self) -> FakeServer:
        """Answer HTTP on 127.0.0.1 (ephemeral port) from this fake's state; see ``FakeServer``.

        ``with FakeAzureML() as fake, fake.serve() as server:`` then run a child process with
        ``env={**os.environ, **server.env()}``: its requests reach this fake (its kill leaves the
        state here), its tokens come from ``fake.credential()``.
        """
        from phi_finetune.testing._server import FakeServer

        scope = {
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "workspace_name": self.workspace_name,
        }
        return FakeServer(self._dispatcher.send, self._credential, scope)

    def set_regional_quota(
        self, limit: int, *, current: int | None = None, low_priority_limit: int | None = None
    ) -> None:
        """Set the regional totals ("Total Cluster Dedicated Regional vCPUs" and, with
        ``low_priority_limit``, the low-priority one); ``current=None`` sums the families'."""
        from phi_finetune.testing._routes_workspace import put_regional_quota

        put_regional_quota(self._store, limit, current, low_priority_limit)

    def set_usage_naming(self, naming: Literal["display", "key"]) -> None:
        """Choose how later ``set_usage`` calls name entries (see ``set_usage``)."""
        self._scope.usage_naming = naming

    def set_system_metadata_key(self, key: Literal["system_metadata", "systemMetadata"]) -> None:
        """Serve registry model versions' system metadata under ``key`` (docs/testing.md)."""
        self._scope.system_metadata_key = key

    def add_reference_model(
        self, *, published_lifecycle: bool = True, registry: str = "azureml"
    ) -> dict[str, Any]:
        """(Re)add Phi-3-mini-4k-instruct 15 from the published spec; ``published_lifecycle``
        keeps it archived with its passed retirement dates, as the registry serves it."""
        record = _catalog.reference_model_record(published_lifecycle=published_lifecycle)
        meta = {k: record[k] for k in ("tags", "system_metadata", "archived")}
        return self.add_model(record["name"], record["version"], registry=registry, **meta)

    def add_completed_job(
        self, name: str, *, outputs: tuple[str, ...] = ("trained_model",)
    ) -> None:
        """A pipeline job ``name`` that has already completed, with ``outputs``: for tests
        that register a model from a job they did not submit (the fake, like Azure, refuses
        models registered from outputs of a missing or unfinished job)."""
        from phi_finetune.testing._routes_registry import created_system_data
        from phi_finetune.testing._state import JobScript, JobState

        store, scope = self._store, self._scope
        body = {
            "id": f"{scope.workspace_id}/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "systemData": created_system_data(store),
            "properties": {
                "jobType": "Pipeline",
                "experimentName": "Default",
                "status": "Completed",
                "jobs": {},
                "outputs": {
                    o: {"jobOutputType": "mlflow_model", "mode": "ReadWriteMount"} for o in outputs
                },
            },
        }
        job = JobState(
            name=name,
            body=body,
            script=JobScript.build(statuses=["Completed"]),
            created=store.next_id(),
        )
        store.put_job(job)
