"""A stateful, autospec'd ``MLClient`` for the serverless backend's unit tests.

Each operation is ``create_autospec`` of the real azure-ai-ml class (a wrong keyword fails as it
would against the SDK) with side effects over small dicts: jobs, models, data assets, serverless
endpoints, marketplace subscriptions. ``crash_after`` makes one operation run and then raise
:class:`Crash` (a reply lost, or the process killed right after the request).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from unittest import mock

from phi_finetune.serverless.facts import REGIONS_TAG
from phi_finetune.testing import autospec_ml_client

WORKSPACE_ID = "11111111-2222-3333-4444-555555555555"


class Crash(BaseException):
    """Stands for a kill: not an Exception, so nothing catches it on the way."""


def _not_found(what: str) -> Exception:
    from azure.core.exceptions import ResourceNotFoundError

    return ResourceNotFoundError(f"{what} not found")


class _Poller:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value


class ServerlessStub:
    """The workspace and registry clients, and what they hold."""

    def __init__(
        self,
        *,
        location: str = "eastus2",
        kind: str = "project",
        hub: str | None = "/subscriptions/s/resourceGroups/rg/providers/x/workspaces/hub",
        regions: str | None = "eastus2,eastus,westus3",
        author: str = "Microsoft",
        polls_before_done: int = 1,
    ) -> None:
        self.jobs: dict[str, SimpleNamespace] = {}
        self.submitted: list[Any] = []
        self.models: dict[str, list[SimpleNamespace]] = {}
        self.data: dict[tuple[str, str], SimpleNamespace] = {}
        self.endpoints: dict[str, SimpleNamespace] = {}
        self.subscriptions: dict[str, SimpleNamespace] = {}
        self.crash_after: str | None = None
        self.polls_before_done = polls_before_done
        self._polls: dict[str, int] = {}
        ml = autospec_ml_client()
        import azure.ai.ml.operations as ops

        ml.serverless_endpoints = mock.create_autospec(
            ops.ServerlessEndpointOperations, instance=True
        )
        ml.marketplace_subscriptions = mock.create_autospec(
            ops.MarketplaceSubscriptionOperations, instance=True
        )
        ml.workspaces.get.side_effect = lambda name=None, **_: SimpleNamespace(
            name=name, location=location, _kind=kind, _hub_id=hub, _workspace_id=WORKSPACE_ID
        )
        ml.data.get.side_effect = self._data_get
        ml.data.create_or_update.side_effect = self._data_create
        ml.jobs.create_or_update.side_effect = self._job_create
        ml.jobs.get.side_effect = self._job_get
        ml.jobs.begin_cancel.side_effect = self._job_cancel
        ml.models.list.side_effect = lambda name=None, **_: list(self.models.get(name, []))
        se = ml.serverless_endpoints
        se.get.side_effect = self._endpoint_get
        se.begin_create_or_update.side_effect = self._endpoint_create
        se.get_keys.side_effect = lambda name, **_: SimpleNamespace(
            primary_key=f"secret-key-of-{name}", secondary_key=None
        )
        se.begin_delete.side_effect = self._endpoint_delete
        ms = ml.marketplace_subscriptions
        ms.begin_create_or_update.side_effect = self._subscribe
        ms.begin_delete.side_effect = self._unsubscribe
        self.ml_client = ml
        registry = autospec_ml_client(workspace_name=None)
        tags = {"author": author}
        if regions is not None:
            tags[REGIONS_TAG] = regions
        registry.models.get.side_effect = lambda name, version=None, label=None, **_: (
            SimpleNamespace(
                name=name,
                version=version or "7",
                id=f"azureml://registries/azureml/models/{name}/versions/{version or '7'}",
                tags=tags,
            )
        )
        self.registry_client = registry

    def workspace(self) -> Any:
        from phi_finetune.azure.workspace import Workspace

        return Workspace.from_clients(self.ml_client, self.registry_client)

    def billable(self) -> list[str]:
        """What would still bill: endpoints, and jobs that have not ended."""
        running = [f"job:{n}" for n, j in self.jobs.items() if j.status not in _ENDED]
        return [f"endpoint:{n}" for n in self.endpoints] + running

    def _maybe_crash(self, operation: str) -> None:
        if self.crash_after == operation:
            self.crash_after = None
            raise Crash(operation)

    # -- operations --------------------------------------------------------------------

    def _data_get(self, name: str, version: str | None = None, **_: Any) -> Any:
        found = self.data.get((name, str(version)))
        if found is None:
            raise _not_found(f"data {name}:{version}")
        return found

    def _data_create(self, data: Any, **_: Any) -> Any:
        entity = SimpleNamespace(
            name=data.name,
            version=data.version,
            tags=dict(data.tags or {}),
            id=f"azureml:{data.name}:{data.version}",
        )
        self.data[(data.name, str(data.version))] = entity
        return entity

    def _job_create(self, job: Any, **_: Any) -> Any:
        self.submitted.append(job)
        outputs = job.outputs or {}
        prefix = outputs["registered_model"].name
        entity = SimpleNamespace(
            name=job.name,
            status="Running",
            studio_url=f"https://ml.azure.com/runs/{job.name}",
            outputs={"registered_model": SimpleNamespace(name=prefix)},
            tags=dict(job.tags or {}),
        )
        self.jobs[job.name] = entity
        self._maybe_crash("jobs.create_or_update")
        return entity

    def _job_get(self, name: str, **_: Any) -> Any:
        job = self.jobs.get(name)
        if job is None:
            raise _not_found(f"job {name}")
        if job.status == "Running":
            self._polls[name] = self._polls.get(name, 0) + 1
            if self._polls[name] > self.polls_before_done:
                job.status = "Completed"
                prefix = job.outputs["registered_model"].name
                versions = self.models.setdefault(prefix, [])
                if not versions:  # the job registers its model once
                    versions.append(
                        SimpleNamespace(
                            name=prefix,
                            version="1",
                            id=f"azureml:{prefix}:1",
                        )
                    )
        return job

    def _job_cancel(self, name: str, **_: Any) -> Any:
        job = self.jobs.get(name)
        if job is None:
            raise _not_found(f"job {name}")
        if job.status not in _ENDED:
            job.status = "Canceled"
        return _Poller(None)

    def _endpoint_get(self, name: str, **_: Any) -> Any:
        found = self.endpoints.get(name)
        if found is None:
            raise _not_found(f"serverless endpoint {name}")
        return found

    def _endpoint_create(self, endpoint: Any, **_: Any) -> Any:
        entity = SimpleNamespace(
            name=endpoint.name,
            model_id=endpoint.model_id,
            location=endpoint.location,
            provisioning_state="Succeeded",
            scoring_uri=f"https://{endpoint.name}.eastus2.models.ai.azure.com",
            tags=dict(endpoint.tags or {}),
        )
        self.endpoints[endpoint.name] = entity
        self._maybe_crash("serverless_endpoints.begin_create_or_update")
        return _Poller(entity)

    def _endpoint_delete(self, name: str, **_: Any) -> Any:
        if self.endpoints.pop(name, None) is None:
            raise _not_found(f"serverless endpoint {name}")
        return _Poller(None)

    def _subscribe(self, subscription: Any, **_: Any) -> Any:
        entity = SimpleNamespace(name=subscription.name, model_id=subscription.model_id)
        self.subscriptions[subscription.name] = entity
        return _Poller(entity)

    def _unsubscribe(self, name: str, **_: Any) -> Any:
        if self.subscriptions.pop(name, None) is None:
            raise _not_found(f"marketplace subscription {name}")
        return _Poller(None)


_ENDED = frozenset({"Completed", "Failed", "Canceled"})


class ChatSession:
    """A ``requests.Session`` stand-in for a serverless endpoint's chat route."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def post(self, url: str, data: bytes, headers: dict[str, str], **_: Any) -> Any:
        body = json.loads(data)
        self.calls.append({"url": url, "body": body, "headers": dict(headers)})
        if not url.endswith("/v1/chat/completions"):
            return _Response(404, b'{"error": {"message": "no such route"}}')
        last = body["messages"][-1]["content"]
        reply = {
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": f"echo: {last[:20]}"}}
            ],
        }
        return _Response(200, json.dumps(reply).encode())


class _Response:
    def __init__(self, status: int, content: bytes) -> None:
        self.status_code = status
        self.content = content
        self.text = content.decode()
        self.headers = {"content-type": "application/json"}

    def close(self) -> None:
        pass
