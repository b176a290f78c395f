"""The local endpoint's OpenAI-compatible route (issue 16, item 1): the real ``openai`` client,
plain and streamed; OpenAI-shaped errors naming the field; key auth; a client that goes away
stops its generation."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("openai")

import openai

from phi_finetune.local.server import LocalServer
from phi_finetune.local.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "the cat sat on the mat"}]
LONG = 300  # tokens: long enough that a stopped generation is obvious
# A prompt the untrained tiny model answers with LONG tokens (checked in the tests that use it).
RAMBLE = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("openai-chat") / "tiny")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[LocalServer]:
    with LocalServer(model_dir, max_new_tokens_limit=LONG, threads=1) as running:
        yield running


def _post(server: LocalServer, body: Any, auth: str | None = "bearer") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {server.key}"
    elif auth is not None:
        headers["Authorization"] = auth
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    status, answer = server.request("POST", "/v1/chat/completions", raw, headers)
    return status, json.loads(answer) if answer.startswith(b"{") else answer


def _health(server: LocalServer) -> dict[str, Any]:
    status, body = server.request("GET", "/health")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


def test_openai_client_plain_and_streamed(server: LocalServer) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=server.key, max_retries=0)
    plain = client.chat.completions.create(
        model="local", messages=USER, temperature=0, max_tokens=12
    )
    assert plain.object == "chat.completion" and plain.id.startswith("chatcmpl-")
    (choice,) = plain.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert plain.usage is not None and plain.usage.completion_tokens <= 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    # The same text as /score gives for the same greedy request.
    scored = server.score([USER], {"max_new_tokens": 12, "do_sample": False})
    assert choice.message.content == scored.text

    chunks = list(
        client.chat.completions.create(
            model="local",
            messages=USER,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == choice.message.content
    assert len([p for p in pieces if p]) > 1  # it streamed, not one blob
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == choice.finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_stream_ends_with_done_event(server: LocalServer) -> None:
    body = {"messages": USER, "temperature": 0, "max_tokens": 4, "stream": True}
    status, raw = _post(server, body)
    assert status == 200
    events = [line for line in raw.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_openai_client_sees_a_bad_field_as_bad_request(server: LocalServer) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=server.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="local", messages=USER, temperature=7)
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "temperature"
    assert "temperature must be a number in [0, 2], got 7" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages[0].role", "user turn"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "string"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens", f"[1, {LONG}]"),
        ({"messages": USER, "max_tokens": LONG + 1}, "max_tokens", f"[1, {LONG}]"),
        ({"messages": USER, "top_p": 0}, "top_p", "(0, 1]"),
        ({"messages": USER, "n": 0}, "n", "n must be an integer"),
        ({"messages": USER, "seed": "x"}, "seed", "seed must be an integer"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"messages": USER, "stream": "yes"}, "stream", "true or false"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "tools", "not supported"),
        ({"messages": USER, "bogus": 1}, "bogus", "Unrecognized request argument"),
        ({"messages": USER, "response_format": {"type": "json_object"}}, "response_format", "JSON"),
    ],
)
def test_bad_input_is_an_openai_400_naming_the_field(
    server: LocalServer, body: dict[str, Any], param: str, words: str
) -> None:
    status, answer = _post(server, body)
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


def test_malformed_json_is_an_openai_400(server: LocalServer) -> None:
    status, answer = _post(server, b'{"messages": [')
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in answer["error"]["message"]


def _prompt_tokens(server: LocalServer, content: str) -> int:
    status, answer = _post(
        server, {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
    )
    assert status == 200, answer
    return int(answer["usage"]["prompt_tokens"])


def test_prompt_over_the_context_names_max_tokens_or_messages(server: LocalServer) -> None:
    context = 1024  # the tiny model's max_position_embeddings
    base, per_word = (
        _prompt_tokens(server, "cat"),
        _prompt_tokens(server, "cat cat") - _prompt_tokens(server, "cat"),
    )
    words = (context - LONG // 2 - base) // per_word  # fits alone, not with LONG more tokens
    content = " ".join(["cat"] * words)
    assert context - LONG < _prompt_tokens(server, content) < context
    status, answer = _post(
        server, {"messages": [{"role": "user", "content": content}], "max_tokens": LONG}
    )
    assert status == 400 and answer["error"]["param"] == "max_tokens"
    assert "context of 1024 tokens" in answer["error"]["message"]
    # Without max_tokens the default shrinks to what is left of the context.
    status, answer = _post(server, {"messages": [{"role": "user", "content": content}]})
    assert status == 200, answer
    too_long = " ".join(["cat"] * (2 * context))
    status, answer = _post(server, {"messages": [{"role": "user", "content": too_long}]})
    assert status == 400 and answer["error"]["param"] == "messages"


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "wrong"])
def test_missing_or_wrong_key_is_an_openai_401(server: LocalServer, auth: str | None) -> None:
    status, answer = _post(server, {"messages": USER}, auth=auth)
    assert status == 401
    assert answer["error"]["code"] == "invalid_api_key"
    assert server.key not in json.dumps(answer)


def test_bare_key_header_still_works(server: LocalServer) -> None:
    status, answer = _post(
        server, {"messages": USER, "temperature": 0, "max_tokens": 2}, auth=server.key
    )
    assert status == 200 and answer["object"] == "chat.completion"


def test_n_choices_stop_strings_and_seed(server: LocalServer) -> None:
    status, plain = _post(server, {"messages": USER, "temperature": 0, "max_tokens": 16})
    assert status == 200
    text = plain["choices"][0]["message"]["content"]
    assert len(text) > 3
    stop = text[2:4]
    status, stopped = _post(
        server, {"messages": USER, "temperature": 0, "max_tokens": 16, "stop": stop, "n": 2}
    )
    assert status == 200
    assert [c["index"] for c in stopped["choices"]] == [0, 1]
    for choice in stopped["choices"]:
        assert choice["message"]["content"] == text[: text.find(stop)]
        assert choice["finish_reason"] == "stop"
    sampled = {"messages": USER, "temperature": 1.0, "max_tokens": 16, "seed": 7}
    first, second = _post(server, sampled)[1], _post(server, sampled)[1]
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def _tokens_after(server: LocalServer, before: int) -> int:
    """Tokens generated since ``before``, once the count stops moving."""
    last = -1
    for _ in range(100):
        now = int(_health(server)["tokens_generated"])
        if now == last:
            return now - before
        last = now
        time.sleep(0.1)
    raise AssertionError("the server kept generating")


def test_a_streaming_client_that_goes_away_stops_generation(server: LocalServer) -> None:
    body = {"messages": RAMBLE, "temperature": 0, "max_tokens": LONG, "stream": True}
    # Greedy decoding is deterministic: left alone this request makes all LONG tokens.
    before = int(_health(server)["tokens_generated"])
    status, _ = _post(server, body)
    assert status == 200
    assert _tokens_after(server, before) == LONG

    before = int(_health(server)["tokens_generated"])
    assert server.port is not None
    raw = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {server.key}\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
            + raw
        )
        received = b""
        while received.count(b"data: ") < 3:  # the role chunk and two content chunks
            data = sock.recv(4096)
            assert data, "the server closed the stream"
            received += data
    made = _tokens_after(server, before)
    assert 0 < made < LONG // 2, made
    assert "stopped generating" in server.log_tail()


def test_a_waiting_client_that_goes_away_stops_generation(server: LocalServer) -> None:
    body = {"messages": RAMBLE, "temperature": 0, "max_tokens": LONG}
    health = _health(server)
    before, batches = int(health["tokens_generated"]), int(health["batches"])
    assert server.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {server.key}"},
    )
    # Leave once its generation is under way (a fixed sleep outlasted it on a fast machine).
    for _ in range(500):
        if int(_health(server)["batches"]) > batches:
            break
        time.sleep(0.002)
    connection.close()
    made = _tokens_after(server, before)
    assert made < LONG, made


def test_endpoint_chat_and_stream_against_the_local_server(server: LocalServer) -> None:
    from phi_finetune.endpoint import Endpoint

    endpoint = Endpoint("local", server.scoring_uri, server.key)
    assert endpoint.chat_uri == server.chat_uri
    expected = server.score([USER], {"max_new_tokens": 12, "do_sample": False}).text
    result = endpoint.chat(USER, temperature=0, max_tokens=12)
    assert result.text == expected and result.shape == "chat"
    pieces = list(endpoint.stream(USER, temperature=0, max_tokens=12))
    assert "".join(pieces) == expected and len(pieces) > 1
    # Leaving a stream early closes the connection, and the server stops generating.
    before = int(_health(server)["tokens_generated"])
    stream = endpoint.stream(RAMBLE, temperature=0, max_tokens=LONG)
    assert next(stream)
    stream.close()
    assert _tokens_after(server, before) < LONG // 2
