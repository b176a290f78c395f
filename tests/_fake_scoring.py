"""Test helper: a ``requests.Session`` whose https calls go through the patched azure-core
transport, so an :class:`Endpoint` can score a ``FakeAzureML`` endpoint offline."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


class _ToAzureTransport(BaseAdapter):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        from azure.core.pipeline.transport import RequestsTransport
        from azure.core.rest import HttpRequest

        body = request.body.encode() if isinstance(request.body, str) else request.body
        answer = RequestsTransport().send(
            HttpRequest(
                str(request.method), str(request.url), headers=dict(request.headers), content=body
            )
        )
        answer.read()
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response._content = answer.content
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


def fake_session() -> requests.Session:
    session = requests.Session()
    session.mount("https://", _ToAzureTransport())
    return session
