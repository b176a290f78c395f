"""The FastAPI app behind :mod:`phi_finetune.local.server` (imported only by the server process).

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import asyncio
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from phi_finetune.errors import LocalBackendError
from phi_finetune.local._chat import encode_prompts, generate
from phi_finetune.local.request_limits import (
    RequestLimits,
    RequestRejected,
    check_prompt_tokens,
    check_scoring_body,
    parse_json_body,
)

logger = logging.getLogger("phi_finetune.local.server")


def _key_matches(header: str | None, key: str) -> bool:
    if not header:
        return False
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return hmac.compare_digest(value.encode("utf-8", "replace"), key.encode("utf-8"))


async def _read_body(request: Request, limits: RequestLimits, timeout: float) -> bytes:
    """The whole body within ``timeout`` s and ``max_body_bytes`` (else RequestRejected)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise RequestRejected(413, f"request body over the limit of {limits.max_body_bytes} bytes")

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestRejected(
                    413, f"request body over the limit of {limits.max_body_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise RequestRejected(
            408, f"the request body did not arrive within {timeout:g} s; send it at once"
        ) from None


def build_app(
    model: Any,
    tokenizer: Any,
    *,
    key: str,
    model_name: str = "model",
    max_body_bytes: int,
    max_new_tokens_limit: int,
    max_batch: int,
    limits: RequestLimits | None = None,
    body_timeout: float = 30.0,
) -> Any:
    """The FastAPI app serving ``model`` (see the module docstring for the contract).

    ``limits`` (default: the given sizes and the model's context) bound every request.
    """
    if not key:
        raise LocalBackendError("the local server needs a non-empty key")
    from phi_finetune.local._chat import context_length

    if limits is None:
        limits = RequestLimits(
            max_body_bytes=max_body_bytes,
            max_new_tokens=max_new_tokens_limit,
            max_batch=max_batch,
            context_length=context_length(model),
        )
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
        # The key is checked before the body is read; a refused client is disconnected.
        if not _key_matches(request.headers.get("authorization"), key):
            return error(
                401,
                "missing or invalid key: send the endpoint key as 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
        try:
            raw = await _read_body(request, limits, body_timeout)
        except ClientDisconnect:
            logger.warning("a client disconnected before sending its whole request body")
            return error(400, "the client disconnected")
        except RequestRejected as exc:
            return error(exc.status, exc.message, {"Connection": "close"})
        try:
            body = parse_json_body(raw, limits)
            conversations, parameters = check_scoring_body(body, limits)
            prompt_ids = await run_in_threadpool(encode_prompts, tokenizer, conversations)
            check_prompt_tokens(
                [len(ids) for ids in prompt_ids], int(parameters["max_new_tokens"]), limits
            )
        except RequestRejected as exc:
            return error(exc.status, exc.message)
        replies = await run_in_threadpool(
            lambda: generate(model, tokenizer, conversations, parameters, prompt_ids=prompt_ids)
        )
        return {"output": replies[0] if len(replies) == 1 else replies}

    return app
