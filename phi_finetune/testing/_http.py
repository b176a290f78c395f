"""Recorded requests, scripted replies, and turning a reply into an azure-core response."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import requests
import urllib3

from phi_finetune._redact import REDACTED

__all__ = [
    "FakeRequest",
    "Reply",
    "azure_error",
    "is_credential_header",
    "read_body",
    "redact_request",
    "redact_text",
    "to_transport_response",
]

# Headers that carry a credential: bearer tokens, the run-history token azure-ai-ml sends,
# endpoint keys, APIM subscription keys and cookies. ``x-ms-<anything>-token`` covers the
# auxiliary and storage tokens (e.g. ``x-ms-authorization-auxiliary`` is listed explicitly).
_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-azureml-token",
        "api-key",
        "ocp-apim-subscription-key",
        "x-ms-authorization-auxiliary",
        "cookie",
        "set-cookie",
    }
)
_X_MS_TOKEN = re.compile(r"(?i)^x-ms-[a-z0-9-]*token$")
# A SAS signature (``sig=``) in a URL, a query string or a body; ends at & " ' or whitespace.
_SAS_SIG = re.compile(r"(?i)(\bsig=)[^&\"'\s<>]+")
_SAS_SIG_BYTES = re.compile(rb"(?i)(\bsig=)[^&\"'\s<>]+")

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    424: "Failed Dependency",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@attrs.frozen
class FakeRequest:
    """One HTTP request the SDK sent to the fake.

    In ``FakeAzureML.requests`` every credential header (``Authorization``, ``x-azureml-token``,
    ``api-key``, ``Ocp-Apim-Subscription-Key``, ``x-ms-*-token``, cookies) and every SAS
    signature (``sig=`` in the URL, query or body) reads ``***``.
    """

    method: str
    url: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = attrs.field(repr=False)
    json: Any = attrs.field(repr=False)
    route: str | None = None
    """Name of the route that answered (``None`` when no route matched)."""
    status: int | None = None
    """Status code the fake answered with (``None`` for a connection reset)."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@attrs.define
class Reply:
    """What a route (or a scorer) answers: status, JSON or raw body, headers."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = attrs.field(factory=dict)

    def content(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.json is None:
            return b""
        return json.dumps(self.json).encode()


def is_credential_header(name: str) -> bool:
    """Whether a header carries a credential (redacted in the request log)."""
    lowered = name.lower()
    return lowered in _CREDENTIAL_HEADERS or _X_MS_TOKEN.match(lowered) is not None


def redact_text(text: str) -> str:
    """``text`` with every SAS signature value (``sig=...``) masked."""
    return _SAS_SIG.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: (REDACTED if is_credential_header(name) else redact_text(value))
        for name, value in headers.items()
    }


def redact_request(req: FakeRequest) -> FakeRequest:
    """A copy of ``req`` fit for the request log: credential headers and SAS signatures masked."""
    body = req.body
    parsed = req.json
    if _SAS_SIG_BYTES.search(body):
        body = _SAS_SIG_BYTES.sub(lambda m: m.group(1) + REDACTED.encode(), body)
        if parsed is not None:
            parsed = json.loads(body)
    return attrs.evolve(
        req,
        url=redact_text(req.url),
        query={k: (REDACTED if k.lower() == "sig" else v) for k, v in req.query.items()},
        headers=_redact_headers(req.headers),
        body=body,
        json=parsed,
    )


def azure_error(status: int, code: str, message: str, **extra: Any) -> Reply:
    """An Azure-shaped error reply: ``{"error": {"code": ..., "message": ...}}``."""
    error: dict[str, Any] = {"code": code, "message": message, **extra}
    return Reply(status=status, json={"error": error}, headers={"x-ms-error-code": code})


def read_body(request: Any) -> bytes:
    """The body of a legacy or ``azure.core.rest`` request as bytes (streams are read)."""
    data: Any = None
    for attr in ("content", "data", "body"):
        try:
            data = getattr(request, attr, None)
        except Exception:  # rest requests may raise on .data
            continue
        if data is not None:
            break
    if data is None:
        files = getattr(request, "files", None)
        return b"" if not files else repr(files).encode()
    return _to_bytes(data)


def _to_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    if hasattr(data, "read"):
        chunk = data.read()
        return chunk if isinstance(chunk, bytes) else str(chunk).encode()
    if isinstance(data, Mapping):
        return json.dumps(dict(data)).encode()
    if isinstance(data, Iterable):
        return b"".join(_to_bytes(part) for part in data)
    return str(data).encode()


def parse_request(request: Any) -> tuple[FakeRequest, dict[str, str]]:
    """A redacted ``FakeRequest`` plus the raw headers (kept private for auth checks)."""
    url = str(request.url)
    parts = urlsplit(url)
    raw_headers = {str(k): str(v) for k, v in dict(request.headers).items()}
    body = read_body(request)
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    fake = FakeRequest(
        method=str(request.method).upper(),
        url=url,
        host=parts.netloc.lower(),
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=_redact_headers(raw_headers),
        body=body,
        json=parsed,
    )
    return fake, raw_headers


def to_transport_response(request: Any, reply: Reply, *, stream: bool = False) -> Any:
    """Wrap ``reply`` as the response type ``RequestsTransport.send`` would return."""
    from azure.core.pipeline.transport import RequestsTransportResponse
    from azure.core.rest import HttpRequest as RestHttpRequest

    method = str(request.method).upper()
    content = b"" if method == "HEAD" else reply.content()
    headers = {k.lower(): v for k, v in reply.headers.items()}
    if reply.json is not None and reply.body is None:
        headers.setdefault("content-type", "application/json; charset=utf-8")
    headers.setdefault("content-length", str(len(content)))
    headers.setdefault("x-ms-request-id", "00000000-0000-0000-0000-00000000f4ce")

    response = requests.Response()
    response.status_code = reply.status
    response.reason = _REASONS.get(reply.status, "Unknown")
    response.url = str(request.url)
    response.headers.update(headers)
    response.encoding = "utf-8"
    raw_headers = {k: v for k, v in headers.items() if k != "content-length"}
    raw_headers["content-length"] = str(len(content))
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(content),
        headers=raw_headers,
        status=reply.status,
        preload_content=False,
        decode_content=False,
    )
    if isinstance(request, RestHttpRequest):
        from azure.core.rest._requests_basic import RestRequestsTransportResponse

        rest = RestRequestsTransportResponse(  # type: ignore[no-untyped-call]
            request=request, internal_response=response
        )
        if not stream:
            rest.read()
        return rest
    return RequestsTransportResponse(request, response)
