"""The endpoint handle: score a deployed model, read its logs, delete it.

:class:`Endpoint` works the same for an Azure ML managed online endpoint and for the local
backend's HTTP server: it needs a scoring URI, a key and (for Azure) the deployment name. It
posts the request itself with :mod:`requests` rather than through
``ml_client.online_endpoints.invoke``, which stores the key in a module-level header dict that
leaks into later calls. The key never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from phi_finetune._endpoint_requests import (
    Retry,
    Secret,
    encode_body,
    parse_retry_after,
    request_from_file,
    status_hint,
)
from phi_finetune._redact import redact
from phi_finetune.errors import (
    DataProblem,
    DataValidationError,
    EndpointError,
    InvocationError,
)
from phi_finetune.observer import ResourceCallback, ResourceObserver, observer_from_callbacks
from phi_finetune.scoring import Message, ScoreResult, build_request, parse_response

if TYPE_CHECKING:
    import requests
    from azure.ai.ml import MLClient

__all__ = ["RETRY_STATUSES", "Endpoint", "delete_online_endpoint", "request_from_file"]

logger = logging.getLogger(__name__)

#: Statuses retried by :meth:`Endpoint.invoke` (throttled, or the deployment is busy/starting).
RETRY_STATUSES = frozenset({429, 503})
_EXCERPT = 500


@contextlib.contextmanager
def sdk_output_to_stderr() -> Iterator[None]:
    """Send what azure-ai-ml prints (progress dots, "Check: endpoint ... exists") to stderr,
    so a command's ``--json`` output on stdout stays parseable."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def delete_online_endpoint(ml_client: MLClient, name: str) -> None:
    """Delete Azure ML online endpoint ``name`` and wait; succeeds when it is already gone."""
    from phi_finetune.azure.boundary import call

    what = (
        f"delete endpoint {name!r} (retry with `phi-finetune teardown` or delete it in the Azure "
        "ML studio: it bills while it exists)"
    )
    # No GET first (the SDK's get also lists the deployments: two requests): Azure answers a
    # delete of nothing with 204 (or 404), which is how "already gone" is told apart.
    status: list[int | None] = []

    def delete() -> None:
        poller = ml_client.online_endpoints.begin_delete(name=name)
        status.append(_initial_status(poller))
        poller.result()

    try:
        with sdk_output_to_stderr():
            call(what, delete)
    except Exception as exc:
        from phi_finetune.azure.boundary import is_not_found

        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            logger.info("endpoint %s was already deleted", name)
            return
        raise
    if status and status[-1] == 204:
        logger.info("endpoint %s was already deleted", name)
        return
    logger.info("endpoint %s deleted", name)


def _initial_status(poller: Any) -> int | None:
    """HTTP status of a long-running operation's first reply (best effort: azure-core keeps it
    on the polling method)."""
    try:
        initial = poller.polling_method()._initial_response
        code = initial.http_response.status_code
    except Exception:  # not an azure-core poller, or its layout changed: unknown
        return None
    return code if isinstance(code, int) else None


class Endpoint:
    """A deployed model you can score.

    Build one with :meth:`~phi_finetune.azure.deployer.EndpointDeployer.deploy`
    or :meth:`from_name` (Azure), from the local backend, or directly from a scoring URI and
    key. ``ml_client`` (or the
    ``fetch_logs``/``deleter`` callbacks) enables :meth:`logs` and :meth:`delete`;
    ``observer.deleted(kind, name)`` (a :class:`~phi_finetune.observer.ResourceObserver`) is
    called after a deletion, e.g. to record it in a run journal (``on_deleted(kind, name)`` is
    its deprecated 0.1 spelling).
    """

    def __init__(
        self,
        name: str,
        scoring_uri: str,
        key: str | None,
        *,
        deployment_name: str | None = None,
        ml_client: MLClient | None = None,
        fetch_logs: Callable[[int], str] | None = None,
        deleter: Callable[[], object] | None = None,
        observer: ResourceObserver | None = None,
        on_deleted: ResourceCallback | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        kind: str = "endpoint",
        chat_uri: str | None = None,
    ) -> None:
        if not scoring_uri.startswith(("http://", "https://")):
            raise EndpointError(
                f"endpoint {name!r}: scoring URI {scoring_uri!r} is not an http(s) URL; the "
                "endpoint may still be provisioning (check `phi-finetune endpoints list`)"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._name = name
        self._scoring_uri = scoring_uri
        self._key = Secret(key)
        self._deployment_name = deployment_name
        self._ml_client = ml_client
        self._fetch_logs = fetch_logs
        self._deleter = deleter
        self._observer = observer_from_callbacks("Endpoint()", observer, on_deleted=on_deleted)
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s
        self._max_retry_after_s = max_retry_after_s
        self._session = session
        self._sleep = sleep
        self._kind = kind
        self._deleted = False
        from phi_finetune.endpoint_chat import chat_url

        self._chat_uri = chat_uri or chat_url(scoring_uri)
        # None: not tried yet; False: the route is missing (404), /score is used instead.
        self._chat_served: bool | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_name(
        cls,
        ml_client: MLClient,
        name: str,
        *,
        deployment_name: str | None = None,
        observer: ResourceObserver | None = None,
        on_deleted: ResourceCallback | None = None,
        **options: Any,
    ) -> Endpoint:
        """Attach to an existing Azure ML online endpoint (gets its scoring URI and key).

        ``deployment_name`` defaults to the deployment receiving most of the traffic;
        ``observer`` hears about :meth:`delete`; ``options`` are the constructor's keyword
        arguments (``timeout_s``, ``max_attempts``...).
        """
        observer = observer_from_callbacks("Endpoint.from_name", observer, on_deleted=on_deleted)
        from phi_finetune.azure.boundary import call
        from phi_finetune.names import validate_deployment_name, validate_endpoint_name

        validate_endpoint_name(name)
        if deployment_name is not None:
            validate_deployment_name(deployment_name)

        def missing(message: str) -> EndpointError:
            return EndpointError(
                f"online endpoint {name!r} does not exist in this workspace; list the existing "
                "ones with `phi-finetune endpoints list`"
            )

        remote = call(
            f"get endpoint {name!r}",
            lambda: ml_client.online_endpoints.get(name=name),
            not_found=missing,
        )
        return cls._from_remote(
            ml_client, name, remote, deployment_name=deployment_name, observer=observer, **options
        )

    @classmethod
    def _from_remote(
        cls,
        ml_client: MLClient,
        name: str,
        remote: Any,
        *,
        deployment_name: str | None = None,
        observer: ResourceObserver | None = None,
        **options: Any,
    ) -> Endpoint:
        """:meth:`from_name` on an endpoint entity already read (e.g. an update's reply)."""
        from phi_finetune.azure.boundary import call

        def missing(message: str) -> EndpointError:
            return EndpointError(
                f"online endpoint {name!r} does not exist in this workspace; list the existing "
                "ones with `phi-finetune endpoints list`"
            )

        scoring_uri = remote.scoring_uri
        if not scoring_uri:
            raise EndpointError(
                f"endpoint {name!r} has no scoring URI yet (provisioning state "
                f"{remote.provisioning_state}); wait for it to finish provisioning and try again"
            )
        if deployment_name is None:
            traffic = dict(remote.traffic or {})
            live = {dep: share for dep, share in traffic.items() if share}
            deployment_name = max(live, key=lambda dep: live[dep]) if live else None
        auth_mode = str(remote.auth_mode or "key").lower()
        if auth_mode != "key":
            raise EndpointError(
                f"endpoint {name!r} uses auth_mode={auth_mode!r}; phi_finetune scores "
                "key-authenticated endpoints only (deploy with auth_mode='key')"
            )
        keys = call(
            f"read the keys of endpoint {name!r} (needs the 'Microsoft.MachineLearningServices/"
            "workspaces/onlineEndpoints/listKeys/action' permission)",
            lambda: ml_client.online_endpoints.get_keys(name=name),
            not_found=missing,
        )
        # get_keys returns EndpointAuthKeys for key auth, a token object for the other modes.
        key = getattr(keys, "primary_key", None) or getattr(keys, "secondary_key", None)
        if not key:
            raise EndpointError(f"endpoint {name!r} returned no key; regenerate its keys")
        return cls(
            name,
            str(scoring_uri),
            str(key),
            deployment_name=deployment_name,
            ml_client=ml_client,
            observer=observer,
            **options,
        )

    @classmethod
    def from_azure(
        cls,
        ml_client: MLClient,
        name: str,
        *,
        deployment_name: str | None = None,
        observer: ResourceObserver | None = None,
        on_deleted: ResourceCallback | None = None,
        **options: Any,
    ) -> Endpoint:
        """Deprecated alias of :meth:`from_name` (removed in 0.3.0)."""
        warnings.warn(
            "Endpoint.from_azure is deprecated; use Endpoint.from_name",
            DeprecationWarning,
            stacklevel=2,
        )
        observer = observer_from_callbacks("Endpoint.from_azure", observer, on_deleted=on_deleted)
        return cls.from_name(
            ml_client, name, deployment_name=deployment_name, observer=observer, **options
        )

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def scoring_uri(self) -> str:
        return self._scoring_uri

    @property
    def deployment_name(self) -> str | None:
        return self._deployment_name

    @property
    def deleted(self) -> bool:
        """Whether :meth:`delete` has run on this handle."""
        return self._deleted

    def __repr__(self) -> str:
        return (
            f"Endpoint(name={self._name!r}, deployment={self._deployment_name!r}, "
            f"scoring_uri={self._scoring_uri!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Name, deployment and scoring URI (never the key)."""
        return {
            "name": self._name,
            "deployment": self._deployment_name,
            "scoring_uri": self._scoring_uri,
            "deleted": self._deleted,
        }

    # ------------------------------------------------------------------ scoring
    def invoke(
        self,
        messages: Sequence[Message] | Sequence[Sequence[Message]],
        **parameters: Any,
    ) -> ScoreResult:
        """Score one conversation (a list of ``{"role", "content"}`` ending with a user turn)
        or a list of them. ``parameters`` override the reference's generation defaults
        (temperature 0.6, top_p 0.9, do_sample, max_new_tokens 200)."""
        try:
            body = build_request(messages, parameters)
        except DataValidationError as exc:
            raise DataValidationError(
                "the scoring request is not valid",
                problems=[
                    DataProblem(
                        source="<messages>",
                        line=None,
                        field=None,
                        message=problem.message,
                        fix=problem.fix,
                        code=problem.code,
                    )
                    for problem in exc.problems
                ],
            ) from exc
        return self.invoke_request(body)

    def invoke_file(self, path: str | os.PathLike[str], **parameters: Any) -> ScoreResult:
        """Score a request file: a full scoring body (``sample_score.json``), a list of
        messages, or an UltraChat record (``{"messages": [...]}``; trailing assistant turns are
        dropped so the model answers the last user turn)."""
        return self.invoke_request(request_from_file(path, **parameters))

    def invoke_request(self, body: Mapping[str, Any]) -> ScoreResult:
        """POST an already built scoring body, retrying 429/503 answers."""
        return self._parse(self._send(encode_body(body), self._scoring_uri))

    def _send(self, payload: bytes, url: str, *, stream: bool = False) -> Any:
        """POST ``payload`` to ``url`` with the key, retrying 429/503 and connection errors."""
        if self._deleted:
            raise EndpointError(f"endpoint {self._name!r} was deleted by this handle")
        import requests

        from phi_finetune.azure.boundary import retrying

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, Retry) and exc.retry_after is not None:
                return min(exc.retry_after, self._max_retry_after_s)
            backoff: float = min(self._max_backoff_s, 0.5 * 2.0 ** (state.attempt_number - 1))
            return backoff * (0.5 + random.random() / 2)

        policy = retrying(
            f"score endpoint {self._name!r}",
            attempts=self._max_attempts,
            retry_on=lambda exc: isinstance(exc, Retry),
            wait=wait,
            sleep=self._sleep,
        )
        try:
            return policy(self._post_once, payload, requests, url, stream)
        except Retry as exc:
            if exc.timed_out:
                raise InvocationError(
                    f"endpoint {self._name!r} did not answer within {self._timeout_s:g} s "
                    f"({self._max_attempts} attempts); raise the deployment's "
                    "request_timeout_ms or ask for fewer max_new_tokens",
                    body_excerpt=exc.body,
                ) from None
            what = f"HTTP {exc.status}" if exc.status is not None else "a connection error"
            raise InvocationError(
                f"endpoint {self._name!r} kept answering {what} after {self._max_attempts} "
                "attempts; the deployment is overloaded or still starting: wait and retry, "
                "or scale it out (instance_count)",
                status=exc.status,
                body_excerpt=self._excerpt(exc.body),
            ) from None

    def _post_once(
        self, payload: bytes, requests: Any, url: str | None = None, stream: bool = False
    ) -> Any:
        url = url or self._scoring_uri
        accept = "text/event-stream" if stream else "application/json"
        headers = {"Content-Type": "application/json", "Accept": accept}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key.get()}"
        if self._deployment_name:
            headers["azureml-model-deployment"] = self._deployment_name
        logger.debug(
            "POST %s (endpoint %s, deployment %s, %d bytes)",
            url,
            self._name,
            self._deployment_name,
            len(payload),
        )
        poster = self._session if self._session is not None else requests
        try:
            # ``stream`` only when streaming: the plain call stays what sessions expect.
            extra: dict[str, Any] = {"stream": True} if stream else {}
            response = poster.post(
                url, data=payload, headers=headers, timeout=self._timeout_s, **extra
            )
        except requests.ConnectionError as exc:
            raise Retry(None, type(exc).__name__, None) from None
        except requests.Timeout as exc:  # transient too: retried, then the timeout error
            raise Retry(None, type(exc).__name__, None, timed_out=True) from None
        except requests.RequestException as exc:
            raise InvocationError(
                f"could not reach endpoint {self._name!r} at {url}: {type(exc).__name__}",
                body_excerpt=self._excerpt(str(exc)),
            ) from None
        if response.status_code in RETRY_STATUSES:
            raise Retry(
                response.status_code,
                response.text,
                parse_retry_after(response.headers.get("Retry-After")),
            )
        return response

    # ------------------------------------------------------------------ OpenAI-compatible chat
    @property
    def chat_uri(self) -> str:
        """The OpenAI-compatible chat URL (derived from the scoring URI unless given)."""
        return self._chat_uri

    def chat(self, messages: Sequence[Message], **parameters: Any) -> ScoreResult:
        """One chat completion through ``/v1/chat/completions`` (OpenAI parameters:
        ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``n``, ``seed``...); one output
        per choice. An endpoint that does not serve the route (HTTP 404/405) is scored through
        ``/score`` instead, with a warning in the log; then ``seed`` and other OpenAI-only
        fields are dropped and ``stop`` is applied to the text."""
        from phi_finetune.endpoint_chat import chat_body, parse_chat_response

        body = chat_body(messages, parameters)
        if self._chat_served is not False:
            response = self._send(encode_body(body), self._chat_uri)
            if not self._route_missing(response):
                self._chat_served = True
                self._check_status(response)
                return parse_chat_response(response.content)
        return self._chat_by_score(messages, parameters)

    def stream(self, messages: Sequence[Message], **parameters: Any) -> Iterator[str]:
        """The reply's text pieces as the endpoint generates them (``stream=true``). Closing
        the iterator early closes the connection, which stops the generation on servers that
        notice (the local one does). Without the chat route: one piece, from ``/score``."""
        from phi_finetune.endpoint_chat import chat_body, stream_text

        body = chat_body(messages, parameters, stream=True)
        if self._chat_served is not False:
            response = self._send(encode_body(body), self._chat_uri, stream=True)
            if not self._route_missing(response):
                self._chat_served = True
                try:
                    self._check_status(response)
                    kind = str(response.headers.get("content-type", ""))
                    if not kind.startswith("text/event-stream"):
                        yield from self._parse_chat_outputs(response)
                        return
                    yield from stream_text(response.iter_lines())
                finally:
                    response.close()
                return
        result = self._chat_by_score(messages, parameters)
        if result.text:
            yield result.text

    def _parse_chat_outputs(self, response: Any) -> Iterator[str]:
        from phi_finetune.endpoint_chat import parse_chat_response

        text = parse_chat_response(response.content).text
        if text:
            yield text

    def _route_missing(self, response: Any) -> bool:
        if int(response.status_code) not in (404, 405):
            return False
        response.close()
        return True

    def _check_status(self, response: Any) -> None:
        status = int(response.status_code)
        if status >= 400:
            raise InvocationError(
                f"endpoint {self._name!r} answered HTTP {status}: {status_hint(status)}",
                status=status,
                body_excerpt=self._excerpt(response.text),
            )

    def _chat_by_score(
        self, messages: Sequence[Message], parameters: Mapping[str, Any]
    ) -> ScoreResult:
        from phi_finetune.endpoint_chat import apply_stop, score_fallback

        score_parameters, n, dropped = score_fallback(parameters)
        if self._chat_served is None:
            logger.warning(
                "endpoint %s does not serve %s (HTTP 404); scoring through /score instead%s",
                self._name,
                self._chat_uri,
                f" (ignoring {', '.join(dropped)})" if dropped else "",
            )
        result = self.invoke([list(messages)] * n, **score_parameters)
        self._chat_served = False
        stop = parameters.get("stop")
        outputs = tuple(apply_stop(text, stop) for text in result.outputs)
        return ScoreResult(outputs=outputs, shape=result.shape, raw=result.raw)

    def _parse(self, response: Any) -> ScoreResult:
        status = int(response.status_code)
        text = response.text
        if status >= 400:
            raise InvocationError(
                f"endpoint {self._name!r} answered HTTP {status}: {status_hint(status)}",
                status=status,
                body_excerpt=self._excerpt(text),
            )
        try:
            return parse_response(response.content)
        except InvocationError as exc:
            raise InvocationError(
                f"endpoint {self._name!r}: {exc}",
                status=status,
                body_excerpt=self._excerpt(exc.body_excerpt),
            ) from None

    def _excerpt(self, text: str) -> str:
        cleaned = redact(text or "", [self._key.get()])
        return cleaned if len(cleaned) <= _EXCERPT else cleaned[:_EXCERPT] + "..."

    # ------------------------------------------------------------------ logs and deletion
    def logs(self, lines: int = 100, *, container_type: str | None = None) -> str:
        """The last ``lines`` lines of the deployment's logs (secrets scrubbed)."""
        if self._fetch_logs is not None:
            return redact(self._fetch_logs(lines), [self._key.get()])
        if self._ml_client is None or not self._deployment_name:
            raise EndpointError(
                f"endpoint {self._name!r}: no log source; build the handle with "
                "Endpoint.from_name(ml_client, name) to read Azure deployment logs"
            )
        from phi_finetune.azure.boundary import call

        client, deployment = self._ml_client, self._deployment_name
        text = call(
            f"read the logs of deployment {deployment!r} on endpoint {self._name!r}",
            lambda: client.online_deployments.get_logs(
                name=deployment,
                endpoint_name=self._name,
                lines=lines,
                container_type=container_type,
            ),
        )
        return redact(str(text or ""), [self._key.get()])

    def delete(self) -> None:
        """Delete the endpoint (and its deployments) and wait. Succeeds when already gone."""
        if self._deleted:
            return
        if self._deleter is not None:
            self._deleter()
        elif self._ml_client is not None:
            delete_online_endpoint(self._ml_client, self._name)
        else:
            raise EndpointError(
                f"endpoint {self._name!r}: this handle cannot delete it (no ml_client or "
                "deleter); delete it with `phi-finetune teardown RUN_ID`"
            )
        self._deleted = True
        if self._observer is not None:
            self._observer.deleted(self._kind, self._name)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.delete()
            return
        try:
            self.delete()
        except Exception:
            logger.error(
                "endpoint %s could not be deleted while handling another error; it may still "
                "bill: delete it with `phi-finetune teardown`",
                self._name,
                exc_info=True,
            )
