"""Endpoint.invoke against a tiny loopback HTTP server: shapes, retries, errors, no key leaks."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.endpoint import Endpoint, request_from_file
from phi_finetune.errors import DataValidationError, EndpointError, InvocationError
from phi_finetune.observer import NullObserver

KEY = "k3y-Secret-Endpoint-Key-abcdef0123456789"
USER = [{"role": "user", "content": "What is 2+2?"}]

Answer = tuple[int, dict[str, str], bytes]


class Recorder:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.default: Answer = (200, {}, b'{"output": "4"}')
        self.seen: list[dict[str, Any]] = []

    def next(self) -> Answer:
        return self.answers.pop(0) if self.answers else self.default


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            recorder.seen.append(
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
            )
            status, headers, payload = recorder.next()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/score", recorder
    finally:
        httpd.shutdown()
        httpd.server_close()


def make(uri: str, **kwargs: Any) -> tuple[Endpoint, list[float]]:
    sleeps: list[float] = []
    options: dict[str, Any] = {"deployment_name": "demo", "sleep": sleeps.append, **kwargs}
    return Endpoint("ultrachat-completion-x", uri, KEY, **options), sleeps


def test_invoke_sends_the_reference_request_with_key_and_deployment(
    server: tuple[str, Recorder],
) -> None:
    uri, rec = server
    endpoint, _ = make(uri)
    result = endpoint.invoke(USER, max_new_tokens=50)
    assert result.text == "4" and result.shape == "output"
    sent = rec.seen[0]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["headers"]["azureml-model-deployment"] == "demo"
    assert sent["body"] == {
        "input_data": {
            "input_string": [USER],
            "parameters": {
                "temperature": 0.6,
                "top_p": 0.9,
                "do_sample": True,
                "max_new_tokens": 50,
            },
        },
        "params": {},
    }


def test_indexed_response_shape(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    rec.default = (200, {}, b'[{"0": "four"}]')
    result = make(uri)[0].invoke(USER)
    assert result.outputs == ("four",) and result.shape == "indexed"


def test_batch_of_conversations(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    rec.default = (200, {}, b'{"output": ["a", "b"]}')
    result = make(uri)[0].invoke([USER, USER])
    assert result.outputs == ("a", "b")
    assert len(rec.seen[0]["body"]["input_data"]["input_string"]) == 2


@pytest.mark.parametrize("status", [429, 503])
def test_transient_statuses_are_retried_honouring_retry_after(
    server: tuple[str, Recorder], status: int
) -> None:
    uri, rec = server
    rec.answers = [
        (status, {"Retry-After": "3"}, b"busy"),
        (status, {}, b"busy"),
    ]
    endpoint, sleeps = make(uri)
    assert endpoint.invoke(USER).text == "4"
    assert len(rec.seen) == 3
    assert sleeps[0] == 3.0
    assert 0 < sleeps[1] <= 30


def test_retry_after_is_capped(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    rec.answers = [(429, {"Retry-After": "100000"}, b"")]
    endpoint, sleeps = make(uri, max_retry_after_s=5)
    endpoint.invoke(USER)
    assert sleeps == [5]


def test_retries_are_bounded(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    rec.default = (503, {"Retry-After": "0"}, b"no healthy upstream")
    endpoint, sleeps = make(uri, max_attempts=3)
    with pytest.raises(InvocationError, match="after 3 attempts") as info:
        endpoint.invoke(USER)
    assert info.value.status == 503
    assert "no healthy upstream" in info.value.body_excerpt
    assert len(rec.seen) == 3 and len(sleeps) == 2


def test_401_is_not_retried_and_explains(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    rec.default = (401, {}, json.dumps({"error": f"bad key {KEY}"}).encode())
    with pytest.raises(InvocationError, match="key was refused") as info:
        make(uri)[0].invoke(USER)
    assert info.value.status == 401
    assert len(rec.seen) == 1
    assert KEY not in info.value.body_excerpt and KEY not in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (200, b"<html>oops</html>", "not JSON"),
        (200, b'{"result": 1}', "unknown shape"),
        (500, b"x" * 5000, "HTTP 500"),
        (424, b'{"message": "model crashed"}', "HTTP 424"),
    ],
)
def test_bad_answers_raise_invocation_error_with_excerpt(
    server: tuple[str, Recorder], status: int, body: bytes, match: str
) -> None:
    uri, rec = server
    rec.default = (status, {}, body)
    with pytest.raises(InvocationError, match=match) as info:
        make(uri)[0].invoke(USER)
    assert info.value.status == status
    assert 0 < len(info.value.body_excerpt) <= 503


def test_connection_refused_is_retried_then_reported() -> None:
    endpoint, sleeps = make("http://127.0.0.1:9/score", max_attempts=2, timeout_s=2)
    with pytest.raises(InvocationError, match="connection error") as info:
        endpoint.invoke(USER)
    assert info.value.status is None and len(sleeps) == 1


def test_bad_messages_are_refused_before_sending(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    endpoint, _ = make(uri)
    with pytest.raises(DataValidationError, match="user turn"):
        endpoint.invoke([{"role": "assistant", "content": "hi"}])
    with pytest.raises(DataValidationError, match="top_p"):
        endpoint.invoke(USER, top_p=3)
    assert rec.seen == []


def test_invoke_file_formats(server: tuple[str, Recorder], tmp_path: Path) -> None:
    uri, rec = server
    endpoint, _ = make(uri)
    full = tmp_path / "sample_score.json"
    full.write_text(
        json.dumps(
            {
                "input_data": {"input_string": [USER], "parameters": {"temperature": 0.1}},
                "params": {"p": 1},
            }
        )
    )
    assert endpoint.invoke_file(full).text == "4"
    assert rec.seen[-1]["body"]["input_data"]["parameters"]["temperature"] == 0.1
    assert rec.seen[-1]["body"]["params"] == {"p": 1}
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps(USER))
    endpoint.invoke_file(messages, max_new_tokens=7)
    assert rec.seen[-1]["body"]["input_data"]["parameters"]["max_new_tokens"] == 7
    record = tmp_path / "row.jsonl"
    record.write_text(
        json.dumps({"prompt": "p", "messages": [*USER, {"role": "assistant", "content": "4"}]})
        + "\n"
    )
    endpoint.invoke_file(record)
    assert rec.seen[-1]["body"]["input_data"]["input_string"] == [USER]


@pytest.mark.parametrize("content", ["", "not json", '{"x": 1}', '{"input_data": 3}'])
def test_bad_request_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataValidationError, match=r"bad\.json"):
        request_from_file(path)
    with pytest.raises(DataValidationError, match="cannot read"):
        request_from_file(tmp_path / "missing.json")


def test_repr_and_dict_never_show_the_key(server: tuple[str, Recorder]) -> None:
    endpoint, _ = make(server[0])
    assert KEY not in repr(endpoint) and KEY not in str(endpoint)
    assert KEY not in json.dumps(endpoint.to_dict())
    assert KEY not in repr(vars(endpoint))
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(endpoint)


def test_logs_never_show_the_key(
    server: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    uri, rec = server
    rec.answers = [(429, {"Retry-After": "0"}, f"throttled {KEY}".encode())]
    caplog.set_level(logging.DEBUG)
    make(uri)[0].invoke(USER)
    assert caplog.records
    assert KEY not in caplog.text


def test_delete_is_idempotent_and_reports(server: tuple[str, Recorder]) -> None:
    calls: list[str] = []
    deleted: list[tuple[str, str]] = []

    class Deletions(NullObserver):
        def deleted(self, kind: str, name: str, version: str | None = None) -> None:
            deleted.append((kind, name))

    endpoint = Endpoint(
        "ep",
        server[0],
        KEY,
        deleter=lambda: calls.append("x"),
        observer=Deletions(),
        kind="local_server",
    )
    assert endpoint.delete() is None
    endpoint.delete()
    assert calls == ["x"] and deleted == [("local_server", "ep")]
    assert endpoint.deleted
    with pytest.raises(EndpointError, match="deleted"):
        endpoint.invoke(USER)


def test_context_manager_deletes_on_exit_even_on_error(server: tuple[str, Recorder]) -> None:
    calls: list[str] = []
    with Endpoint("ep", server[0], KEY, deleter=lambda: calls.append("x")) as endpoint:
        endpoint.invoke(USER)
    assert calls == ["x"]

    def failing_delete() -> None:
        raise RuntimeError("cannot delete")

    with (
        pytest.raises(ValueError, match="original"),
        Endpoint("ep", server[0], KEY, deleter=failing_delete),
    ):
        raise ValueError("original")


def test_handle_without_delete_or_log_source() -> None:
    endpoint = Endpoint("ep", "http://127.0.0.1:1/score", None)
    with pytest.raises(EndpointError, match="cannot delete"):
        endpoint.delete()
    with pytest.raises(EndpointError, match="no log source"):
        endpoint.logs()
    fetch: Callable[[int], str] = lambda n: f"line {n} Bearer {KEY}"  # noqa: E731
    with_logs = Endpoint("ep", "http://127.0.0.1:1/score", KEY, fetch_logs=fetch)
    assert with_logs.logs(5).startswith("line 5") and KEY not in with_logs.logs(5)


def test_scoring_uri_must_be_http() -> None:
    with pytest.raises(EndpointError, match="not an http"):
        Endpoint("ep", "", KEY)


def test_no_key_sends_no_authorization(server: tuple[str, Recorder]) -> None:
    uri, rec = server
    Endpoint("ep", uri, None).invoke(USER)
    assert "Authorization" not in rec.seen[0]["headers"]
    assert "azureml-model-deployment" not in rec.seen[0]["headers"]
