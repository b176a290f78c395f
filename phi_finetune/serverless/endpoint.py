"""Serverless endpoints: create, reattach, delete, read keys; marketplace subscriptions; and
:class:`ServerlessEndpointHandle`, the :class:`~phi_finetune.endpoint.Endpoint` for them.

A serverless endpoint serves only the OpenAI-compatible ``/v1/chat/completions`` route (no
``/score``), with key auth: :meth:`ServerlessEndpointHandle.invoke` sends its conversation there
and parses the reply into the same :class:`~phi_finetune.scoring.ScoreResult`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from phi_finetune.endpoint import Endpoint
from phi_finetune.errors import DeploymentError, EndpointError, InvocationError, WaitTimeoutError
from phi_finetune.observer import ResourceObserver
from phi_finetune.scoring import Message, ScoreResult

__all__ = [
    "SUBSCRIPTION_KIND",
    "ServerlessEndpointHandle",
    "create_endpoint",
    "delete_endpoint",
    "delete_subscription",
    "endpoint_keys",
    "get_endpoint",
    "subscribe",
    "subscription_model_id",
    "workspace_model_id",
]

logger = logging.getLogger(__name__)

#: The journal's resource kind of a marketplace subscription.
SUBSCRIPTION_KIND = "marketplace_subscription"

_FAILED = frozenset({"failed", "canceled"})


def workspace_model_id(location: str, workspace_id: str, name: str, version: str) -> str:
    """The fine-tuned model's id as a serverless endpoint takes it."""
    return (
        f"azureml://locations/{location}/workspaces/{workspace_id}/models/{name}/versions/{version}"
    )


def subscription_model_id(model_id: str) -> str:
    """A registry model id without ``/versions/<v>`` (what a marketplace subscription takes)."""
    parts = model_id.rstrip("/").split("/")
    return "/".join(parts[:-2]) if len(parts) > 2 and parts[-2] == "versions" else model_id


def get_endpoint(ml_client: Any, name: str) -> Any | None:
    from phi_finetune.azure.boundary import get_or_none

    return get_or_none(
        f"get serverless endpoint {name!r}", lambda: ml_client.serverless_endpoints.get(name)
    )


def create_endpoint(
    ml_client: Any,
    name: str,
    model_id: str,
    *,
    location: str | None,
    tags: Mapping[str, str],
    timeout_s: float,
) -> Any:
    """Create (PUT, safe to repeat) and wait for the endpoint; the succeeded entity."""
    from azure.ai.ml.entities import ServerlessEndpoint

    from phi_finetune.azure.boundary import call

    entity = ServerlessEndpoint(name=name, model_id=model_id, auth_mode="key", tags=dict(tags))
    if location:
        entity.location = location  # else the SDK reads the workspace once more

    def create() -> Any:
        return ml_client.serverless_endpoints.begin_create_or_update(entity).result(
            timeout=timeout_s
        )

    what = (
        f"create serverless endpoint {name!r} for {model_id} (a custom model allows one "
        "deployment: delete an older endpoint of it first)"
    )
    created = call(what, create)
    state = str(getattr(created, "provisioning_state", "") or "").lower()
    if state in _FAILED:
        raise DeploymentError(
            f"serverless endpoint {name!r} ended {state}; delete it (`phi-finetune teardown "
            "RUN_ID`) and check the model's region list and your marketplace subscription"
        )
    return created


def wait_endpoint(
    ml_client: Any,
    name: str,
    *,
    timeout_s: float,
    poll_interval_s: float,
    sleep: Callable[[float], None] | None = None,
) -> Any:
    """Poll a reattached endpoint until it has succeeded."""
    started = time.monotonic()
    while True:
        entity = get_endpoint(ml_client, name)
        if entity is None:
            raise DeploymentError(f"serverless endpoint {name!r} disappeared while provisioning")
        state = str(getattr(entity, "provisioning_state", "") or "").lower()
        if state == "succeeded":
            return entity
        if state in _FAILED:
            raise DeploymentError(f"serverless endpoint {name!r} ended {state}")
        if time.monotonic() - started >= timeout_s:
            raise WaitTimeoutError(
                f"serverless endpoint {name!r} is still {state} after {timeout_s:g} s; "
                "resume the run to keep waiting"
            )
        from phi_finetune.azure.boundary import _do_sleep

        _do_sleep(sleep or time.sleep, poll_interval_s)


def endpoint_keys(ml_client: Any, name: str) -> str:
    """The endpoint's primary key (secondary when there is no primary)."""
    from phi_finetune.azure.boundary import call

    keys = call(
        f"read the keys of serverless endpoint {name!r} (needs the 'Microsoft."
        "MachineLearningServices/workspaces/serverlessEndpoints/listKeys/action' permission)",
        lambda: ml_client.serverless_endpoints.get_keys(name),
    )
    key = getattr(keys, "primary_key", None) or getattr(keys, "secondary_key", None)
    if not key:
        raise EndpointError(f"serverless endpoint {name!r} returned no key; regenerate its keys")
    return str(key)


def delete_endpoint(ml_client: Any, name: str) -> None:
    """Delete and wait; already gone is success."""
    from phi_finetune.azure.boundary import call, is_not_found

    try:
        call(
            f"delete serverless endpoint {name!r} (it bills per hour while it exists: retry "
            "with `phi-finetune teardown RUN_ID` or delete it in the Azure AI Foundry portal)",
            lambda: ml_client.serverless_endpoints.begin_delete(name).result(),
        )
    except Exception as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            logger.info("serverless endpoint %s was already deleted", name)
            return
        raise


def subscribe(ml_client: Any, name: str, model_id: str) -> Any:
    """Create the marketplace subscription (PUT, safe to repeat) and wait."""
    from azure.ai.ml.entities import MarketplaceSubscription

    from phi_finetune.azure.boundary import call

    entity = MarketplaceSubscription(model_id=subscription_model_id(model_id), name=name)
    return call(
        f"subscribe to the marketplace offer of {model_id} as {name!r} (needs a subscription "
        "that can buy Azure Marketplace offers)",
        lambda: ml_client.marketplace_subscriptions.begin_create_or_update(entity).result(),
    )


def delete_subscription(ml_client: Any, name: str) -> None:
    """Delete the marketplace subscription; already gone is success."""
    from phi_finetune.azure.boundary import call, is_not_found

    try:
        call(
            f"delete marketplace subscription {name!r}",
            lambda: ml_client.marketplace_subscriptions.begin_delete(name).result(),
        )
    except Exception as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return
        raise


class ServerlessEndpointHandle(Endpoint):
    """An :class:`~phi_finetune.endpoint.Endpoint` for a serverless endpoint: ``chat`` and
    ``stream`` use ``/v1/chat/completions`` (the only route it serves); ``invoke`` and
    ``invoke_request`` send their first conversation there too (one request per conversation
    of a batch) and return the same :class:`ScoreResult`."""

    def __init__(self, name: str, scoring_uri: str, key: str | None, **options: Any) -> None:
        options.setdefault("kind", "endpoint")
        super().__init__(name, scoring_uri, key, **options)

    @classmethod
    def from_serverless(
        cls,
        ml_client: Any,
        name: str,
        *,
        observer: ResourceObserver | None = None,
        **options: Any,
    ) -> ServerlessEndpointHandle:
        """Attach to serverless endpoint ``name`` (reads its URI and key)."""
        entity = get_endpoint(ml_client, name)
        if entity is None:
            raise EndpointError(
                f"serverless endpoint {name!r} does not exist in this workspace; list them "
                "with `phi-finetune endpoints list`"
            )
        uri = getattr(entity, "scoring_uri", None)
        if not uri:
            raise EndpointError(
                f"serverless endpoint {name!r} has no scoring URI yet (provisioning state "
                f"{getattr(entity, 'provisioning_state', None)}); wait and try again"
            )
        key = endpoint_keys(ml_client, name)
        return cls(
            name,
            str(uri),
            key,
            deleter=lambda: delete_endpoint(ml_client, name),
            observer=observer,
            **options,
        )

    def invoke_request(self, body: Mapping[str, Any]) -> ScoreResult:
        """A ``/score`` body sent as chat completions (a serverless endpoint has no
        ``/score``): one request per conversation, parameters mapped to OpenAI names."""
        conversations, parameters = _from_score_body(body)
        outputs: list[str] = []
        raw: list[Any] = []
        for conversation in conversations:
            result = self.chat(conversation, **parameters)
            outputs.append(result.text)
            raw.append(result.raw)
        return ScoreResult(outputs=tuple(outputs), shape="chat", raw=raw)

    def chat(self, messages: Sequence[Message], **parameters: Any) -> ScoreResult:
        self._chat_served = True  # never fall back to /score: there is none
        return super().chat(messages, **parameters)

    def stream(self, messages: Sequence[Message], **parameters: Any) -> Iterator[str]:
        self._chat_served = True
        return super().stream(messages, **parameters)

    def _route_missing(self, response: Any) -> bool:
        if int(response.status_code) in (404, 405):
            body = str(getattr(response, "text", "") or "")
            response.close()
            raise InvocationError(
                f"serverless endpoint {self.name!r} answered HTTP {response.status_code} on "
                f"{self.chat_uri}; check that the endpoint still exists (`phi-finetune "
                "endpoints list`)",
                status=int(response.status_code),
                body_excerpt=self._excerpt(body),
            )
        return False


_SCORE_TO_CHAT = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p"}


def _from_score_body(body: Mapping[str, Any]) -> tuple[list[list[Any]], dict[str, Any]]:
    data = body.get("input_data") if isinstance(body, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(data.get("input_string"), list):
        raise InvocationError(
            "a serverless endpoint takes chat messages: the request has no "
            "input_data.input_string list to send as /v1/chat/completions"
        )
    items = data["input_string"]
    conversations = [items] if items and isinstance(items[0], Mapping) else list(items)
    given = data.get("parameters") or {}
    parameters = {_SCORE_TO_CHAT[k]: v for k, v in dict(given).items() if k in _SCORE_TO_CHAT}
    if given.get("do_sample") is False:
        parameters["temperature"] = 0
    return [list(c) for c in conversations], parameters
