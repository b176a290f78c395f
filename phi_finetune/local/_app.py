"""The FastAPI app behind :mod:`phi_finetune.local.server` (imported only by the server process).

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from phi_finetune.errors import LocalBackendError
from phi_finetune.local._chat import generate
from phi_finetune.local.registry import conversations_from_input

logger = logging.getLogger("phi_finetune.local.server")


def _key_matches(header: str | None, key: str) -> bool:
    if not header:
        return False
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return hmac.compare_digest(value.encode("utf-8"), key.encode("utf-8"))


def build_app(
    model: Any,
    tokenizer: Any,
    *,
    key: str,
    model_name: str = "model",
    max_body_bytes: int,
    max_new_tokens_limit: int,
    max_batch: int,
) -> Any:
    """The FastAPI app serving ``model`` (see the module docstring for the contract)."""
    if not key:
        raise LocalBackendError("the local server needs a non-empty key")
    app = FastAPI(
        title="phi_finetune local endpoint", docs_url=None, redoc_url=None, openapi_url=None
    )

    def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Any:
        return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        return error(422, "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:
        logger.error("error while handling %s %s", request.method, request.url.path, exc_info=exc)
        return error(500, "internal error in the local endpoint; see the server log")

    @app.get("/")
    @app.get("/health")
    async def health() -> Any:
        return {"status": "healthy", "model": model_name}

    @app.post("/score")
    async def score(request: Request) -> Any:
        if not _key_matches(request.headers.get("authorization"), key):
            return error(
                401,
                "missing or invalid key: send the endpoint key as 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"request body over the limit of {max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return error(413, f"request body over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except ValueError:
            return error(400, "request body is not valid JSON")
        if not isinstance(body, dict) or "input_data" not in body:
            return error(
                422,
                "expected {'input_data': {'input_string': [<conversation>, ...], "
                "'parameters': {...}}}",
            )
        try:
            conversations, parameters = conversations_from_input(
                body, max_new_tokens_limit=max_new_tokens_limit, max_batch=max_batch
            )
        except LocalBackendError as exc:
            return error(422, str(exc))
        replies = await run_in_threadpool(generate, model, tokenizer, conversations, parameters)
        return {"output": replies[0] if len(replies) == 1 else replies}

    return app
