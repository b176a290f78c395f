"""``phi-finetune invoke --chat / --stream`` against a stub OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from phi_finetune.cli.main import main

KEY = "cli-chat-Secret-Key-0123456789"


@pytest.fixture
def chat_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            seen.append({"path": self.path, "body": body, "auth": self.headers["Authorization"]})
            if body.get("stream"):
                events = [
                    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                    {"choices": [{"index": 0, "delta": {"content": "hi "}}]},
                    {"choices": [{"index": 0, "delta": {"content": "back"}}]},
                ]
                payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                kind = "text/event-stream"
            else:
                reply = {
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "hi back"}}
                    ],
                }
                payload, kind = json.dumps(reply), "application/json"
            data = payload.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/score", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _invoke(uri: str, *extra: str) -> int:
    return main(
        ["invoke", "--scoring-uri", uri, "--key-env", "CHAT_KEY", "--message", "hello", *extra]
    )


def test_chat_flag_uses_the_chat_route(
    chat_server: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, seen = chat_server
    monkeypatch.setenv("CHAT_KEY", KEY)
    assert _invoke(uri, "--chat", "--param", "max_tokens=5", "--json") == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["text"] == "hi back" and result["shape"] == "chat"
    assert seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["body"] == {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
    assert seen[0]["auth"] == f"Bearer {KEY}" and KEY not in out + err


def test_stream_flag_prints_as_it_comes(
    chat_server: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, seen = chat_server
    monkeypatch.setenv("CHAT_KEY", KEY)
    assert _invoke(uri, "--stream") == 0
    assert capsys.readouterr().out == "hi back\n"
    assert seen[0]["body"]["stream"] is True
