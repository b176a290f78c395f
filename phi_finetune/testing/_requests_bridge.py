"""Route plain ``requests`` calls (as :class:`~phi_finetune.endpoint.Endpoint` makes them) to the
fake while it is active, so code that scores an endpoint with ``requests`` runs offline too.

Loopback URLs are left alone: local servers (the local backend) keep working under the fake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def make_adapter_send(fake_send: Callable[[Any], Any], real_send: Callable[..., Any]) -> Any:
    """An ``HTTPAdapter.send`` replacement answering non-loopback requests from ``fake_send``."""

    def send(adapter: Any, request: Any, **kwargs: Any) -> Any:
        import requests
        from azure.core.rest import HttpRequest
        from requests.structures import CaseInsensitiveDict

        host = urlsplit(str(request.url)).hostname or ""
        if host.startswith(_LOOPBACK):
            return real_send(adapter, request, **kwargs)
        body = request.body.encode() if isinstance(request.body, str) else request.body
        from azure.core.exceptions import ServiceResponseError, ServiceResponseTimeoutError

        try:
            answer = fake_send(
                HttpRequest(
                    str(request.method),
                    str(request.url),
                    headers=dict(request.headers),
                    content=body,
                )
            )
        except ServiceResponseTimeoutError as exc:  # what requests itself raises
            raise requests.ReadTimeout(str(exc), request=request) from None
        except ServiceResponseError as exc:
            raise requests.ConnectionError(str(exc), request=request) from None
        answer.read()
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response._content = answer.content
        response._content_consumed = True  # type: ignore[attr-defined]  # iter_lines reads _content
        response.url = str(request.url)
        response.request = request
        response.reason = "fake"
        return response

    return send
