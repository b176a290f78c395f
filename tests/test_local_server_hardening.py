"""The local endpoint under hostile input and hostile clients (issue 15, "Local endpoint").

One server per module (starting one takes seconds), built on the untrained tiny model with
short timeouts so the timeout cases finish in about a second each.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
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

from phi_finetune.local.server import LocalServer, remove_server_files
from phi_finetune.local.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "the cat sat on the mat"}]
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("hardening") / "tiny")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[LocalServer]:
    with LocalServer(
        model_dir,
        max_new_tokens_limit=64,
        header_timeout=HEADER_TIMEOUT,
        body_timeout=BODY_TIMEOUT,
        keep_alive_timeout=1,
        max_connections=MAX_CONNECTIONS,
        threads=1,
    ) as running:
        yield running


def _body(parameters: Any = None, conversations: Any = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"input_string": conversations if conversations else [USER]}
    if parameters is not None:
        inner["parameters"] = parameters
    return {"input_data": inner, "params": {}}


def _post(server: LocalServer, body: Any, *, key: bool = True) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {server.key}"
    status, answer = server.request("POST", "/score", raw, headers, timeout=30)
    return status, json.loads(answer)


def _raw_connection(server: LocalServer) -> socket.socket:
    assert server.port is not None
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for over {limit_s} s")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def _head(server: LocalServer, length: int, *, key: bool = True) -> bytes:
    lines = [
        "POST /score HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if key:
        lines.append(f"Authorization: Bearer {server.key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("parameters", "name"),
    [
        ({"top_k": -1, "do_sample": True}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_k": 10**30, "do_sample": True}, "top_k"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": -1}, "repetition_penalty"),
        ({"repetition_penalty": "1.1"}, "repetition_penalty"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": -3}, "num_beams"),
        ({"num_beams": 50_000}, "num_beams"),
        ({"num_beams": 10**400}, "num_beams"),
        ({"temperature": float("nan"), "do_sample": True}, "temperature"),
        ({"temperature": float("inf"), "do_sample": True}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 1e-30, "do_sample": True}, "temperature"),
        ({"temperature": 10**400}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": float("nan")}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 65}, "max_new_tokens"),
        ({"max_new_tokens": "10"}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"do_sample": 1}, "do_sample"),
        ({"return_full_text": "no"}, "return_full_text"),
    ],
)
def test_bad_generation_parameters_are_422_naming_the_parameter(
    server: LocalServer, parameters: dict[str, Any], name: str
) -> None:
    status, answer = _post(server, _body(parameters))
    assert status == 422, answer
    assert f"parameters.{name} must be" in answer["error"]


def test_every_bad_parameter_is_named_at_once(server: LocalServer) -> None:
    status, answer = _post(server, _body({"top_k": -1, "num_beams": 0, "temperature": -1}))
    assert status == 422
    for name in ("top_k", "num_beams", "temperature"):
        assert f"parameters.{name}" in answer["error"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"top_k": 0, "do_sample": True, "max_new_tokens": 4},
        {"temperature": 0.0001, "do_sample": True, "max_new_tokens": 4},
        {"temperature": 100, "top_p": 1, "do_sample": True, "max_new_tokens": 4},
        {"num_beams": 4, "max_new_tokens": 4},
        {"repetition_penalty": 0.01, "max_new_tokens": 4},
        {"repetition_penalty": 10, "top_k": 100_000, "do_sample": True, "max_new_tokens": 4},
        {"max_new_tokens": 64, "do_sample": False},
    ],
)
def test_values_at_the_bounds_generate(server: LocalServer, parameters: dict[str, Any]) -> None:
    status, answer = _post(server, _body(parameters))
    assert status == 200, answer
    assert isinstance(answer["output"], str)


# --------------------------------------------------------------------------- prompt size


def test_prompt_beyond_the_model_context_is_refused(server: LocalServer) -> None:
    # 1,501 messages of the tiny model (1,024 positions): far more tokens than it can attend to.
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "the cat sat"}
        for i in range(1501)
    ]
    status, answer = _post(server, _body({"max_new_tokens": 4}, [messages]))
    assert status == 422
    assert "context of 1024 positions" in answer["error"]
    assert "input_string[0]" in answer["error"]


def test_prompt_plus_max_new_tokens_must_fit_the_context(server: LocalServer) -> None:
    # Find a prompt that fits alone but not with 64 new tokens: grow it until 4 fit and 64 not.
    words = 100
    while words < 2000:
        conversation = [{"role": "user", "content": " ".join(["cat"] * words)}]
        small = _post(server, _body({"max_new_tokens": 1}, [conversation]))[0]
        if small != 200:
            break
        big, answer = _post(server, _body({"max_new_tokens": 64}, [conversation]))
        if big == 422:
            assert "with max_new_tokens 64" in answer["error"]
            return
        words += 100
    pytest.fail("no prompt length was refused with 64 new tokens but accepted with 1")


def test_a_huge_prompt_is_refused_quickly(server: LocalServer) -> None:
    conversation = [{"role": "user", "content": "a" * 100_000}]
    start = time.monotonic()
    status, answer = _post(server, _body({"max_new_tokens": 4}, [conversation]))
    elapsed = time.monotonic() - start
    assert status == 422
    assert "characters of content, over the limit" in answer["error"]
    assert elapsed < 5


# --------------------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b"[" * 100_000, "nested deeper than"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than"),
        (
            json.dumps(_body(conversations=[[{"role": "user", "content": [[[[[[]]]]]]}]]))
            .replace("[[[[[[]]]]]]", "[" * 60 + "]" * 60)
            .encode(),
            "nested deeper than",
        ),
        (b'{"input_data": {"input_string": [[{"role": "user", "content": "\\ud800"}]]}}', "lone"),
        (b'{"input_data": {"input_string": [[{"role": "user", "content": "a\\udfffb"}]]}}', "lone"),
        (b'{"\\ud800": 1}', "lone surrogate"),
        (b'{"input_data": {"input_string": [[{"role": "user", "content": "\xff"}]]}}', "UTF-8"),
        (
            b'{"input_data": {"input_string": [[{"role": "user", "content": "\xed\xa0\x80"}]]}}',
            "UTF-8",
        ),
        (b'{"input_data": {"parameters": {"top_k": ' + b"1" * 5000 + b"}}}", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
    ],
    ids=[
        "deep-list",
        "deep-unclosed",
        "deep-object",
        "deep-inside-content",
        "lone-high-surrogate",
        "lone-low-surrogate",
        "surrogate-in-key",
        "invalid-utf8",
        "utf8-encoded-surrogate",
        "5000-digit-integer",
        "empty",
        "not-json",
    ],
)
def test_malformed_json_and_invalid_unicode_are_400(
    server: LocalServer, raw: bytes, fragment: str
) -> None:
    status, answer = _post(server, raw)
    assert status == 400, answer
    assert fragment in answer["error"]
    assert "Traceback" not in answer["error"]


def test_the_surrogate_error_says_where(server: LocalServer) -> None:
    raw = b'{"input_data": {"input_string": [[{"role": "user", "content": "\\ud800"}]]}}'
    _, answer = _post(server, raw)
    assert "input_string[0][0].content" in answer["error"]


def test_a_surrogate_pair_is_fine(server: LocalServer) -> None:
    raw = (
        b'{"input_data": {"input_string": [[{"role": "user", "content": "cat \\ud83d\\ude00"}]],'
        b' "parameters": {"max_new_tokens": 2}}}'
    )
    assert _post(server, raw)[0] == 200


# --------------------------------------------------------------------------- connections


def test_idle_connections_without_a_key_do_not_starve_real_clients(server: LocalServer) -> None:
    idle = [_raw_connection(server) for _ in range(150)]  # more than uvicorn's old 128 limit
    try:
        for _ in range(3):
            status, answer = _post(server, _body({"max_new_tokens": 2}))
            assert status == 200, answer
    finally:
        for sock in idle:
            sock.close()


def test_unauthenticated_requests_are_refused_before_the_body_and_disconnected(
    server: LocalServer,
) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(150):
            socks.append(_raw_connection(server))
            socks[-1].sendall(_head(server, 500_000, key=False))  # the body never comes
        answers = [_read_until_closed(sock, 5)[0] for sock in socks]
        # Each is answered 401 and closed (or, while over max_connections, closed unanswered).
        assert all(a == b"" or a.startswith(b"HTTP/1.1 401") for a in answers)
        assert all(a.startswith(b"HTTP/1.1 401") for a in answers[-5:])
        assert _post(server, _body({"max_new_tokens": 2}))[0] == 200
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_that_sends_no_request_is_closed(server: LocalServer) -> None:
    sock = _raw_connection(server)
    with sock:
        data, elapsed = _read_until_closed(sock, HEADER_TIMEOUT + 5)
    assert data == b""
    assert elapsed >= HEADER_TIMEOUT * 0.8


def test_a_slow_request_head_is_closed(server: LocalServer) -> None:
    sock = _raw_connection(server)
    with sock:
        sock.sendall(b"POST /score HTTP/1.1\r\n")
        start = time.monotonic()
        closed = False
        for _ in range(40):  # one header line every 0.1 s, never finishing the head
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed, "the server kept a never-ending request head open for 4 s"
    assert time.monotonic() - start < HEADER_TIMEOUT + 2


def test_a_body_that_does_not_arrive_gets_408(server: LocalServer) -> None:
    sock = _raw_connection(server)
    with sock:
        sock.sendall(_head(server, 100) + b'{"input_data"')
        data, elapsed = _read_until_closed(sock, BODY_TIMEOUT + 5)
    assert data.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within" in data
    assert elapsed < BODY_TIMEOUT + 3


def test_idle_keep_alive_connections_are_closed(server: LocalServer) -> None:
    assert server.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        assert response.status == 200
        response.read()
        sock = connection.sock
        assert sock is not None
        data, elapsed = _read_until_closed(sock, 5)
        assert data == b"" and elapsed < 4
    finally:
        connection.close()


def _log_text(server: LocalServer) -> str:
    assert server.log_path is not None
    return server.log_path.read_text(encoding="utf-8", errors="replace")


def test_a_client_that_disconnects_mid_body_is_one_quiet_log_line(server: LocalServer) -> None:
    before = _log_text(server)
    sock = _raw_connection(server)
    sock.sendall(_head(server, 1000) + b'{"input_data": ')
    time.sleep(0.2)
    sock.close()
    new = ""
    for _ in range(50):
        new = _log_text(server)[len(before) :]
        if new:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # anything else it logs for this client would come right after
    new = _log_text(server)[len(before) :]
    assert new.count("\n") == 1, new
    assert "disconnected" in new
    assert "Traceback" not in new
    assert _post(server, _body({"max_new_tokens": 2}))[0] == 200


# --------------------------------------------------------------------------- load


def test_200_requests_at_concurrency_32_have_no_errors(server: LocalServer) -> None:
    assert server.port is not None
    body = json.dumps(_body({"max_new_tokens": 2, "do_sample": False})).encode("utf-8")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server.key}"}
    errors: list[str] = []
    outputs: set[str] = set()
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            for _ in range(200 // 32 + 1):
                try:
                    connection.request("POST", "/score", body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    with lock:
                        if response.status != 200:
                            errors.append(f"{response.status}: {data[:100]!r}")
                        else:
                            outputs.add(json.loads(data)["output"])
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(repr(exc))
                    connection.close()
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(outputs) == 1  # greedy: the same reply every time


# --------------------------------------------------------------------------- files


def test_stop_removes_the_log_and_the_key_file(model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "endpoint.key"
    key_file.write_text("k" * 43, encoding="utf-8")
    server = LocalServer(model_dir, key="k" * 43, key_file=key_file, threads=1).start()
    log = server.log_path
    assert log is not None and log.is_file()
    server.stop()
    assert not log.exists()
    assert not log.parent.exists()
    assert not key_file.exists()
    server.stop()  # idempotent


def test_a_failed_start_keeps_the_log_its_error_names(tmp_path: Path) -> None:
    server = LocalServer(tmp_path / "no-model-here", startup_timeout=120)
    with pytest.raises(Exception, match="full log: ") as info:
        server.start()
    path = Path(str(info.value).rsplit("full log: ", 1)[1].strip())
    assert path.is_file()
    path.unlink()


def test_remove_server_files_accepts_missing_files(tmp_path: Path) -> None:
    key_file = tmp_path / "endpoint.key"
    key_file.write_text("secret", encoding="utf-8")
    remove_server_files(key_file=key_file, log_path=tmp_path / "never-written.log")
    assert not key_file.exists()
    remove_server_files(key_file=key_file, log_path=None)


def test_teardown_removes_the_key_file(trained_run_copy: Any, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from phi_finetune.local.backend import LocalBackend
    from phi_finetune.session import FineTuneSession

    session = trained_run_copy
    endpoint = session.deploy()
    key_file = Path(session.journal.run_dir) / "endpoint.key"
    assert key_file.is_file()
    assert endpoint.invoke(USER, max_new_tokens=2).outputs
    # Teardown from a process that does not hold the server (it knows only the journal).
    FineTuneSession.teardown_run(
        session.run_id, state_dir=tmp_path / "state", backend=LocalBackend()
    )
    assert not key_file.exists()
    session.backend.delete_resource(session._context(), session.journal.resources()[-1])


def test_over_max_connections_with_every_one_busy_is_503() -> None:
    import asyncio

    import uvicorn

    from phi_finetune.local._connection_guard import guarded_protocol

    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while not release.is_set():  # a request in flight until the test lets it go
            await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        limit_concurrency=None,
        http=guarded_protocol(header_timeout=5, max_connections=2),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    busy: list[socket.socket] = []
    try:
        for _ in range(50):
            if server.started:
                break
            time.sleep(0.05)
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(2):
            busy.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            busy[-1].sendall(request)
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        with extra:
            data, _ = _read_until_closed(extra, 5)
        assert data.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in data and data.endswith(b'retry in a while"}')
        release.set()
        for connection in busy:
            connection.settimeout(5)
            assert connection.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        release.set()
        for connection in busy:
            connection.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
