"""The OpenAI-compatible ``/v1/chat/completions`` answer, shared by managed online endpoints
(``_routes_endpoints``) and serverless endpoints (``_routes_serverless``).

The fake's scorer (``_scoring``) writes the text: the request's messages go to it as one
``input_data.input_string`` conversation, and its answer comes back OpenAI-shaped, as a
``chat.completion`` or, with ``stream: true``, as server-sent ``chat.completion.chunk`` events
ending with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from phi_finetune.testing._http import Reply

if TYPE_CHECKING:
    from phi_finetune.testing._store import FakeStore

__all__ = ["chat_completion_reply", "chat_text"]


def chat_text(answer: Any) -> str:
    """The text of a scorer's answer (``{"output": ...}``, ``[{"0": ...}]`` or anything)."""
    if isinstance(answer, dict) and "output" in answer:
        output = answer["output"]
        return str(output[0] if isinstance(output, list) and output else output)
    if isinstance(answer, list) and answer and isinstance(answer[0], dict):
        return str(next(iter(answer[0].values()), ""))
    return str(answer)


def chat_completion_reply(
    store: FakeStore,
    sent: Any,
    *,
    endpoint: str,
    deployment: str | None,
    model: str,
    headers: dict[str, str],
) -> Reply:
    """Answer a chat-completions request body ``sent`` for ``endpoint`` (and ``deployment``)."""
    if not isinstance(sent, dict):
        sent = {}
    messages = sent.get("messages")
    if not isinstance(messages, list) or not messages:
        return Reply(
            status=400,
            json={
                "error": {
                    "message": "messages must be a non-empty list",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": None,
                }
            },
        )
    store.record_scoring_call(endpoint, deployment, sent)
    answer = store.scorer(
        {"input_data": {"input_string": [messages], "parameters": {}}}, deployment
    )
    if isinstance(answer, Reply):
        return answer
    text = chat_text(answer)
    wanted_n = sent.get("n")
    n = wanted_n if isinstance(wanted_n, int) and wanted_n > 0 else 1
    ident = f"chatcmpl-fake-{store.next_id()}"
    base = {"id": ident, "created": 1_700_000_000, "model": model}
    if sent.get("stream") is True:
        events = []
        for index in range(n):
            for delta, finish in (
                ({"role": "assistant", "content": ""}, None),
                *(({"content": word}, None) for word in re.findall(r"\S+\s*", text)),
                ({}, "stop"),
            ):
                chunk = {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
                }
                events.append(f"data: {json.dumps(chunk)}\n\n")
        events.append("data: [DONE]\n\n")
        return Reply(
            body="".join(events).encode(), headers={**headers, "content-type": "text/event-stream"}
        )
    words = len(text.split())
    body = {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for index in range(n)
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": words, "total_tokens": words},
    }
    return Reply(json=body, headers=headers)
