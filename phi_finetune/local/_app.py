"""The FastAPI app behind :mod:`phi_finetune.local.server` (imported only by the server process).

No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.
"""

import asyncio
import functools
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from phi_finetune.errors import LocalBackendError
from phi_finetune.local._chat import encode_prompts, render_prompt
from phi_finetune.local.batching import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BATCH_SIZE,
    Batcher,
    GenerationJob,
    JobResult,
)
from phi_finetune.local.openai_chat import (
    CHAT_ROUTE,
    DONE_EVENT,
    ChatRejected,
    ChatRequest,
    chat_error,
    check_chat_body,
    chunk_event,
    completion_body,
    fit_context,
    new_id,
)
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


_SCORE_OPTIONS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "num_beams")


async def _until_disconnect(request: Request) -> None:
    """Return when the client goes away (the body was read: only ``http.disconnect`` is left)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def _results(
    request: Request, batcher: Batcher, jobs: list[GenerationJob]
) -> list[JobResult] | None:
    """Wait for ``jobs``; ``None`` (and the jobs cancelled) when the client goes away first."""
    futures = [asyncio.wrap_future(batcher.submit(job)) for job in jobs]
    results = asyncio.gather(*futures)
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        waiters: set[asyncio.Future[Any]] = {results, gone}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        _cancelled(jobs, futures)
        raise
    finally:
        gone.cancel()
    if results.done():
        return list(results.result())
    _cancelled(jobs, futures)
    results.add_done_callback(_retrieve)  # a failure after the client left is not an error
    return None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _cancelled(jobs: list[GenerationJob], futures: list[Any]) -> None:
    running = [job for job, future in zip(jobs, futures, strict=True) if not future.done()]
    for job in jobs:
        job.cancel()
    if running:
        logger.warning(
            "a client disconnected before its reply was ready; stopped generating for it "
            "(%d of %d conversations unfinished)",
            len(running),
            len(jobs),
        )


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
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> Any:
    """The FastAPI app serving ``model`` (see the module docstring for the contract).

    ``limits`` (default: the given sizes and the model's context) bound every request;
    concurrent requests are generated together (:class:`~phi_finetune.local.batching.Batcher`,
    collecting for ``batch_window_ms`` up to ``max_batch_size`` conversations).
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
    checked: RequestLimits = limits
    batcher = Batcher(model, tokenizer, window_s=batch_window_ms / 1000.0, max_size=max_batch_size)
    app = FastAPI(
        title="phi_finetune local endpoint", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.batcher = batcher

    def error(
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        request: Request | None = None,
    ) -> Any:
        if request is not None and request.url.path == CHAT_ROUTE:
            return openai_error(status, message, None, headers)
        return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))

    def openai_error(
        status: int, message: str, param: str | None, headers: Mapping[str, str] | None = None
    ) -> Any:
        code = "invalid_api_key" if status == 401 else None
        return JSONResponse(
            chat_error(status, message, param, code),
            status_code=status,
            headers=dict(headers or {}),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        return error(exc.status_code, str(exc.detail), request=request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        return error(422, "invalid request", request=request)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:
        logger.error("error while handling %s %s", request.method, request.url.path, exc_info=exc)
        return error(
            500, "internal error in the local endpoint; see the server log", request=request
        )

    @app.get("/")
    @app.get("/health")
    async def health() -> Any:
        return {"status": "healthy", "model": model_name, **batcher.stats()}

    async def authorized_body(request: Request) -> bytes | Any:
        """The body, or the error response (the key is checked before the body is read)."""
        if not _key_matches(request.headers.get("authorization"), key):
            return error(
                401,
                "missing or invalid key: send the endpoint key as 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer", "Connection": "close"},
                request=request,
            )
        try:
            return await _read_body(request, checked, body_timeout)
        except ClientDisconnect:
            logger.warning("a client disconnected before sending its whole request body")
            return error(400, "the client disconnected", request=request)
        except RequestRejected as exc:
            return error(exc.status, exc.message, {"Connection": "close"}, request=request)

    @app.post("/score")
    async def score(request: Request) -> Any:
        batcher.announce()
        try:
            raw = await authorized_body(request)
            if not isinstance(raw, bytes):
                return raw
            body = parse_json_body(raw, checked)
            conversations, parameters = check_scoring_body(body, checked)
            prompt_ids = await run_in_threadpool(encode_prompts, tokenizer, conversations)
            check_prompt_tokens(
                [len(ids) for ids in prompt_ids], int(parameters["max_new_tokens"]), checked
            )
        except RequestRejected as exc:
            return error(exc.status, exc.message)
        finally:
            batcher.withdraw()
        options = {name: parameters[name] for name in _SCORE_OPTIONS if name in parameters}
        jobs = [
            GenerationJob(
                prompt_ids=ids, max_new_tokens=int(parameters["max_new_tokens"]), options=options
            )
            for ids in prompt_ids
        ]
        results = await _results(request, batcher, jobs)
        if results is None:
            return error(499, "the client disconnected")
        replies = [result.text for result in results]
        if parameters.get("return_full_text"):
            replies = [
                render_prompt(tokenizer, conversation) + reply
                for conversation, reply in zip(conversations, replies, strict=True)
            ]
        return {"output": replies[0] if len(replies) == 1 else replies}

    @app.post(CHAT_ROUTE)
    async def chat_completions(request: Request) -> Any:
        batcher.announce()
        try:
            raw = await authorized_body(request)
            if not isinstance(raw, bytes):
                return raw
            try:
                body = parse_json_body(raw, checked)
            except RequestRejected as exc:
                raise ChatRejected(
                    400 if exc.status == 422 else exc.status, exc.message, None
                ) from None
            chat = check_chat_body(body, checked)
            (ids,) = await run_in_threadpool(encode_prompts, tokenizer, [list(chat.messages)])
            max_tokens = fit_context(chat, len(ids), checked)
        except ChatRejected as exc:
            return openai_error(exc.status, exc.message, exc.param)
        except RequestRejected as exc:
            return openai_error(exc.status, exc.message, None)
        finally:
            batcher.withdraw()
        completion_id = new_id()
        if chat.stream:
            return StreamingResponse(
                _events(batcher, chat, ids, max_tokens, completion_id, model_name),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        jobs = _chat_jobs(chat, ids, max_tokens)
        results = await _results(request, batcher, jobs)
        if results is None:
            return openai_error(499, "the client disconnected", None)
        return completion_body(
            completion_id,
            model_name,
            [(result.text, _finish(result)) for result in results],
            len(ids),
            sum(len(result.token_ids) for result in results),
        )

    return app


def _finish(result: JobResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _chat_jobs(
    chat: ChatRequest,
    ids: list[int],
    max_tokens: int,
    on_text: Callable[[int, str], None] | None = None,
) -> list[GenerationJob]:
    return [
        GenerationJob(
            prompt_ids=ids,
            max_new_tokens=max_tokens,
            options=chat.options,
            stop=chat.stop,
            seed=None if chat.seed is None else chat.seed + index,
            on_text=None if on_text is None else functools.partial(on_text, index),
        )
        for index in range(chat.n)
    ]


def _job_done(
    loop: asyncio.AbstractEventLoop,
    events: asyncio.Queue[tuple[int, str | None]],
    index: int,
    future: Any,
) -> None:
    loop.call_soon_threadsafe(events.put_nowait, (index, None))


async def _events(
    batcher: Batcher,
    chat: ChatRequest,
    ids: list[int],
    max_tokens: int,
    completion_id: str,
    model_name: str,
) -> AsyncIterator[bytes]:
    """The server-sent events of a streamed completion; a client that leaves stops the jobs."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    def on_text(index: int, piece: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (index, piece))

    jobs = _chat_jobs(chat, ids, max_tokens, on_text)
    futures = []
    for index, job in enumerate(jobs):
        future = batcher.submit(job)
        future.add_done_callback(functools.partial(_job_done, loop, events, index))
        futures.append(future)
    finished = 0
    try:
        for index in range(len(jobs)):
            yield chunk_event(
                completion_id, model_name, index=index, delta={"role": "assistant", "content": ""}
            )
        tokens = 0
        while finished < len(jobs):
            index, piece = await events.get()
            if piece is not None:
                yield chunk_event(completion_id, model_name, index=index, delta={"content": piece})
                continue
            finished += 1
            result = futures[index].result()
            tokens += len(result.token_ids)
            yield chunk_event(completion_id, model_name, index=index, finish_reason=_finish(result))
        if chat.include_usage:
            usage = {
                "prompt_tokens": len(ids),
                "completion_tokens": tokens,
                "total_tokens": len(ids) + tokens,
            }
            yield chunk_event(completion_id, model_name, usage=usage)
        yield DONE_EVENT
    finally:
        if finished < len(jobs):
            for job in jobs:
                job.cancel()
            logger.warning(
                "a client disconnected from a streamed reply; stopped generating for it "
                "(%d of %d choices unfinished)",
                len(jobs) - finished,
                len(jobs),
            )
