"""OpenAI-compatible chat for any endpoint that serves ``/v1/chat/completions``.

Independent of the endpoint kind: a chat URL, a key and a route are all it needs, so
:class:`~phi_finetune.endpoint.Endpoint` uses it for the local server and managed online
endpoints (where the foundation-model inference container serves the route next to ``/score``;
azureml-examples derive the URL as ``scoring_uri.replace("/score", "/v1/chat/completions")``),
and other kinds (serverless) can reuse it.

- :func:`chat_url`: the chat URL of a scoring URI or base URL.
- :func:`chat_body`: a checked request body (OpenAI field names; ``max_new_tokens`` is
  accepted as ``max_tokens``).
- :func:`parse_chat_response`: a ``chat.completion`` object as a
  :class:`~phi_finetune.scoring.ScoreResult` (one output per choice, shape ``chat``).
- :func:`stream_text`: the text pieces of a server-sent-event stream of chunks.
- :func:`score_fallback`: the ``/score`` parameters for a chat call, for endpoints without the
  route.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from phi_finetune.errors import DataProblem, DataValidationError, InvocationError
from phi_finetune.scoring import ScoreResult, validate_conversation

__all__ = [
    "CHAT_PATH",
    "apply_stop",
    "chat_body",
    "chat_url",
    "parse_chat_response",
    "score_fallback",
    "stream_text",
]

#: The OpenAI-compatible route, relative to the endpoint's base URL.
CHAT_PATH = "/v1/chat/completions"
_EXCERPT = 500


def chat_url(uri: str) -> str:
    """``.../score`` -> ``.../v1/chat/completions``; a base URL gets the path appended."""
    base = uri.rstrip("/")
    if base.endswith(CHAT_PATH):
        return base
    if base.endswith("/score"):
        return base[: -len("/score")] + CHAT_PATH
    if base.endswith("/v1"):
        return base + CHAT_PATH[len("/v1") :]
    return base + CHAT_PATH


def chat_body(
    messages: Sequence[Mapping[str, Any]], parameters: Mapping[str, Any], *, stream: bool = False
) -> dict[str, Any]:
    """The request body; :class:`~phi_finetune.errors.DataValidationError` for bad messages."""
    problems = validate_conversation(list(messages), where="messages")
    if problems:
        raise DataValidationError(
            "the chat request is not valid",
            problems=[
                DataProblem(
                    source="<messages>",
                    line=None,
                    field=None,
                    message=problem,
                    fix="pass a list of {'role', 'content'} messages ending with a user turn",
                    code="invalid-request",
                )
                for problem in problems
            ],
        )
    body: dict[str, Any] = {"messages": [dict(message) for message in messages]}
    params = dict(parameters)
    if "max_new_tokens" in params and "max_tokens" not in params:
        params["max_tokens"] = params.pop("max_new_tokens")
    body.update(params)
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def _excerpt(text: str | bytes) -> str:
    value = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return value if len(value) <= _EXCERPT else value[:_EXCERPT] + "..."


def parse_chat_response(content: bytes | str) -> ScoreResult:
    """A ``chat.completion`` body as a :class:`ScoreResult` (one output per choice)."""
    try:
        data = json.loads(content)
        choices = sorted(data["choices"], key=lambda choice: int(choice.get("index", 0)))
        outputs = tuple(str(choice["message"].get("content") or "") for choice in choices)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvocationError(
            "the endpoint's chat reply is not a chat.completion object",
            body_excerpt=_excerpt(content),
        ) from None
    return ScoreResult(outputs=outputs, shape="chat", raw=data)


def stream_text(lines: Iterable[bytes | str], *, choice: int = 0) -> Iterator[str]:
    """The content pieces of choice ``choice`` in a stream of ``data: {...}`` events."""
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not line.startswith("data:"):
            continue  # blank separators, comments, "event:" lines
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise InvocationError(
                "the endpoint's stream holds an event that is not JSON", body_excerpt=_excerpt(data)
            ) from None
        if isinstance(chunk, Mapping) and "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, Mapping) else error
            raise InvocationError(
                f"the endpoint failed while streaming: {message}", body_excerpt=_excerpt(data)
            )
        choices = (chunk.get("choices") or ()) if isinstance(chunk, Mapping) else ()
        for item in choices:
            if int(item.get("index", 0)) != choice:
                continue
            piece = (item.get("delta") or {}).get("content")
            if piece:
                yield str(piece)


def score_fallback(parameters: Mapping[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
    """``(score parameters, n, names dropped)`` for sending a chat call to ``/score``."""
    params = dict(parameters)
    out: dict[str, Any] = {}
    tokens = params.pop("max_tokens", None)
    tokens = params.pop("max_completion_tokens", tokens)
    tokens = params.pop("max_new_tokens", tokens)
    if tokens is not None:
        out["max_new_tokens"] = tokens
    if "temperature" in params:
        temperature = params.pop("temperature")
        out["temperature"] = temperature
        out["do_sample"] = bool(temperature)
    for name in ("top_p", "top_k", "repetition_penalty", "do_sample"):
        if name in params:
            out[name] = params.pop(name)
    n = params.pop("n", None)
    params.pop("stop", None)  # applied to the text afterwards
    params.pop("stream", None)
    params.pop("model", None)
    return out, int(n) if isinstance(n, int) and n > 0 else 1, sorted(params)


def apply_stop(text: str, stop: Any) -> str:
    """``text`` cut before the first of the ``stop`` strings (a string or a list)."""
    items = [stop] if isinstance(stop, str) else list(stop or ())
    cuts = [text.find(item) for item in items if isinstance(item, str) and item]
    found = [cut for cut in cuts if cut >= 0]
    return text[: min(found)] if found else text
