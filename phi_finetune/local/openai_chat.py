"""The OpenAI chat-completions contract of the local endpoint: request checks and reply shapes.

``POST /v1/chat/completions`` takes the OpenAI request body (``messages``, ``temperature``,
``top_p``, ``max_tokens`` or ``max_completion_tokens``, ``stop``, ``n``, ``seed``, ``stream``,
``stream_options.include_usage``; ``top_k`` and ``repetition_penalty`` as extensions, like
vLLM) and answers a ``chat.completion`` object, or with ``stream`` true server-sent events of
``chat.completion.chunk`` objects followed by ``data: [DONE]``. Shapes as in the OpenAI API
reference and ``openai-python`` (``openai.types.chat``).

Differences from OpenAI, on purpose: ``temperature`` 0 (or below 1e-4) is greedy decoding;
``n`` > 1 with a ``seed`` seeds choice ``i`` with ``seed + i``; ``model`` is accepted and
ignored (the server serves one model). Fields that would change the answer in a way this
server cannot honour (``tools``, ``logprobs``, a JSON ``response_format``, non-zero
``presence_penalty``...) are refused, as is any unknown field, with a 400 naming it.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from phi_finetune.local.request_limits import RequestLimits, RequestRejected

__all__ = [
    "CHAT_ROUTE",
    "ChatRequest",
    "chat_error",
    "check_chat_body",
    "chunk_event",
    "completion_body",
]

#: The route, as the OpenAI client builds it from ``base_url``.
CHAT_ROUTE = "/v1/chat/completions"

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_IGNORED = {"model", "user", "metadata", "store", "service_tier", "stream_options"}
_NEUTRAL: dict[str, Any] = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "parallel_tool_calls": (True, False),
}
_UNSUPPORTED = {"tools", "tool_choice", "functions", "function_call", "logit_bias", "top_logprobs"}
_KNOWN = {
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "stream",
    "top_k",
    "repetition_penalty",
    "response_format",
    *_IGNORED,
    *_NEUTRAL,
    *_UNSUPPORTED,
}
_MAX_STOP = 4
_MIN_TEMPERATURE = 1e-4


@attrs.frozen
class ChatRequest:
    """A checked chat-completions request."""

    messages: tuple[Mapping[str, str], ...]
    max_tokens: int
    options: Mapping[str, Any]
    """Generation options for :class:`~phi_finetune.local.batching.GenerationJob`."""
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens_given: bool = False


@attrs.frozen
class _Problem:
    param: str
    message: str


def chat_error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = {
        401: "authentication_error",
        404: "not_found_error",
        408: "timeout_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ChatRejected(RequestRejected):
    """A refused chat request; ``param`` names the first offending field."""

    def __init__(self, status: int, message: str, param: str | None) -> None:
        super().__init__(status, message)
        self.param = param


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _content(value: Any, where: str, problems: list[_Problem]) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts: list[str] = []
        for index, part in enumerate(value):
            if (
                isinstance(part, Mapping)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                texts.append(part["text"])
            else:
                problems.append(
                    _Problem(
                        f"{where}[{index}]",
                        f"{where}[{index}] must be a text part {{'type': 'text', 'text': '...'}} "
                        "(this model reads text only)",
                    )
                )
        return "".join(texts)
    problems.append(_Problem(where, f"{where} must be a string or a list of text parts"))
    return None


def _messages(value: Any, limits: RequestLimits, problems: list[_Problem]) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        problems.append(
            _Problem(
                "messages",
                "messages must be a non-empty list of {'role': ..., 'content': ...} objects",
            )
        )
        return []
    if len(value) > limits.max_messages:
        problems.append(
            _Problem(
                "messages",
                f"messages has {len(value)} entries, over the limit of {limits.max_messages}",
            )
        )
        return []
    out: list[dict[str, str]] = []
    chars = 0
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            problems.append(_Problem(where, f"{where} must be an object with role and content"))
            continue
        role = message.get("role")
        if role not in _ROLES:
            problems.append(
                _Problem(
                    f"{where}.role",
                    f"{where}.role must be one of 'system', 'developer', 'user', 'assistant', "
                    f"got {_show(role)}",
                )
            )
            continue
        content = _content(message.get("content"), f"{where}.content", problems)
        if content is None:
            continue
        chars += len(content)
        out.append({"role": _ROLES[role], "content": content})
    if out and out[-1]["role"] != "user" and len(out) == len(value):
        last = len(value) - 1
        problems.append(
            _Problem(
                f"messages[{last}].role",
                f"the last message (messages[{last}]) must be a user turn for the model to answer",
            )
        )
    if chars > limits.max_prompt_chars:
        problems.append(
            _Problem(
                "messages",
                f"the messages hold {chars} characters of content, over the limit of "
                f"{limits.max_prompt_chars}; shorten them",
            )
        )
    return out


def _number(
    body: Mapping[str, Any],
    name: str,
    low: float,
    high: float,
    problems: list[_Problem],
    *,
    open_low: bool = False,
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    bad = not _is_number(value) or value > high or (value <= low if open_low else value < low)
    if bad:
        interval = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
        problems.append(
            _Problem(name, f"{name} must be a number in {interval}, got {_show(value)}")
        )
        return None
    return float(value)


def _integer(
    body: Mapping[str, Any], name: str, low: int, high: int, problems: list[_Problem]
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or not low <= value <= high:
        problems.append(
            _Problem(name, f"{name} must be an integer in [{low}, {high}], got {_show(value)}")
        )
        return None
    return int(value)


def _stop(value: Any, problems: list[_Problem]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or len(items) > _MAX_STOP
        or not all(isinstance(s, str) and s for s in items)
    ):
        problems.append(
            _Problem(
                "stop",
                f"stop must be a non-empty string or a list of at most {_MAX_STOP} non-empty "
                f"strings, got {_show(value)}",
            )
        )
        return ()
    return tuple(items)


def _field_problems(body: Mapping[str, Any], problems: list[_Problem]) -> None:
    for name, value in body.items():
        if name not in _KNOWN:
            problems.append(_Problem(name, f"Unrecognized request argument supplied: {name}"))
        elif value is None:
            continue
        elif name in _UNSUPPORTED:
            problems.append(_Problem(name, f"{name} is not supported by the local endpoint"))
        elif name in _NEUTRAL and value not in _NEUTRAL[name]:
            problems.append(
                _Problem(name, f"{name} is not supported by the local endpoint; leave it out")
            )
    response_format = body.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, Mapping) and response_format.get("type") == "text"
    ):
        problems.append(
            _Problem(
                "response_format",
                "response_format must be {'type': 'text'}: the local endpoint does not "
                "constrain the output to JSON",
            )
        )


def check_chat_body(body: Any, limits: RequestLimits) -> ChatRequest:
    """Check an OpenAI chat-completions body; :class:`ChatRejected` (400) names every problem."""
    if not isinstance(body, Mapping):
        raise ChatRejected(400, "the request body must be a JSON object with 'messages'", None)
    problems: list[_Problem] = []
    _field_problems(body, problems)
    messages = _messages(body.get("messages"), limits, problems)
    temperature = _number(body, "temperature", 0, 2, problems)
    top_p = _number(body, "top_p", 0, 1, problems, open_low=True)
    top_k = _integer(body, "top_k", 0, 100_000, problems)
    penalty = _number(body, "repetition_penalty", 0.01, 10, problems)
    max_tokens = _integer(body, "max_tokens", 1, limits.max_new_tokens, problems)
    if max_tokens is None:
        max_tokens = _integer(body, "max_completion_tokens", 1, limits.max_new_tokens, problems)
    n = _integer(body, "n", 1, limits.max_batch, problems)
    seed = _integer(body, "seed", 0, 2**63 - 1, problems)
    stop = _stop(body.get("stop"), problems)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        problems.append(_Problem("stream", f"stream must be true or false, got {_show(stream)}"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping) or not isinstance(
            options.get("include_usage", False), bool
        ):
            problems.append(
                _Problem("stream_options", "stream_options must be {'include_usage': true|false}")
            )
        else:
            include_usage = bool(options.get("include_usage", False))
    if problems:
        raise ChatRejected(
            400, "; ".join(problem.message for problem in problems), problems[0].param
        )
    # OpenAI's default temperature is 1 (sampling); 0 is greedy here.
    temperature = 1.0 if temperature is None else temperature
    generation: dict[str, Any] = {"do_sample": temperature >= _MIN_TEMPERATURE}
    if generation["do_sample"]:
        generation["temperature"] = temperature
        if top_p is not None:
            generation["top_p"] = top_p
        if top_k is not None:
            generation["top_k"] = top_k
    if penalty is not None:
        generation["repetition_penalty"] = penalty
    given = max_tokens is not None
    return ChatRequest(
        messages=tuple(messages),
        max_tokens=max_tokens
        if max_tokens is not None
        else min(limits.default_max_new_tokens, limits.max_new_tokens),
        options=generation,
        stop=stop,
        n=n or 1,
        seed=seed,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens_given=given,
    )


def fit_context(request: ChatRequest, prompt_tokens: int, limits: RequestLimits) -> int:
    """``max_tokens`` for this prompt: a default shrinks to the context, a given one must fit."""
    context = limits.context_length
    if context is None or prompt_tokens + request.max_tokens <= context:
        return request.max_tokens
    room = context - prompt_tokens
    if request.max_tokens_given or room < 1:
        param = "max_tokens" if request.max_tokens_given and room >= 1 else "messages"
        raise ChatRejected(
            400,
            f"the messages are {prompt_tokens} tokens; with max_tokens {request.max_tokens} "
            f"that is over the model's context of {context} tokens; shorten the messages or "
            "lower max_tokens",
            param,
        )
    return room


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    completion_id: str,
    model: str,
    choices: Sequence[tuple[str, str]],
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``choices`` are ``(text, finish_reason)``."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for index, (text, finish_reason) in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk_event(
    completion_id: str,
    model: str,
    *,
    index: int | None = None,
    delta: Mapping[str, str] | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
) -> bytes:
    """One server-sent event holding a ``chat.completion.chunk``."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if index is None
        else [
            {
                "index": index,
                "delta": dict(delta or {}),
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        chunk["usage"] = dict(usage)
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"


#: The event that ends a stream.
DONE_EVENT = b"data: [DONE]\n\n"
