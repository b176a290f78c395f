"""``phi-finetune invoke`` and ``phi-finetune endpoints``: targets, output, and no key leaks."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.registrar import ModelRegistrar
from phi_finetune.backends import JournalObserver
from phi_finetune.cli import endpoints as endpoints_cli
from phi_finetune.cli import invoke as invoke_cli
from phi_finetune.cli.main import main
from phi_finetune.journal import Journal
from phi_finetune.testing import FakeAzureML

KEY = "local-Secret-Key-0123456789abcdefXYZ"


@pytest.fixture
def local_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"headers": dict(self.headers), "body": body})
            ok = self.headers.get("Authorization") == f"Bearer {KEY}"
            payload = json.dumps({"output": "hi back"} if ok else {"error": "no"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/score", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_scoring_uri_with_key_env(
    local_server: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri, seen = local_server
    monkeypatch.setenv("MY_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    code = main(
        [
            "invoke",
            "--scoring-uri",
            uri,
            "--key-env",
            "MY_KEY",
            "--message",
            "hello",
            "--system",
            "be brief",
            "--param",
            "max_new_tokens=20",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert result["text"] == "hi back" and result["shape"] == "output"
    body = seen[0]["body"]["input_data"]
    assert body["parameters"]["max_new_tokens"] == 20
    assert [m["role"] for m in body["input_string"][0]] == ["system", "user"]
    assert KEY not in out + err + caplog.text


def test_missing_key_env_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "invoke",
            "--scoring-uri",
            "http://127.0.0.1:1/score",
            "--key-env",
            "NOPE_X",
            "--message",
            "m",
        ]
    )
    assert code == 1
    assert "NOPE_X" in capsys.readouterr().err


def test_run_with_local_server_key_file(
    local_server: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, _ = local_server
    key_file = tmp_path / "server.key"
    key_file.write_text(KEY)
    journal = Journal.create(tmp_path / "state", backend="local")
    journal.record_resource(
        "local_server", "local-endpoint", details={"scoring_uri": uri, "key_file": str(key_file)}
    )
    request = tmp_path / "sample_score.json"
    request.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    code = main(
        [
            "invoke",
            "--run",
            journal.run_id,
            "--state-dir",
            str(tmp_path / "state"),
            "--file",
            str(request),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == "hi back"
    assert KEY not in out + err + journal.path.read_text()


def test_run_whose_endpoint_was_deleted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = Journal.create(tmp_path, backend="azure")
    journal.record_resource("endpoint", "gone-endpoint")
    journal.mark_deleted("endpoint", "gone-endpoint")
    code = main(["invoke", "--run", journal.run_id, "--state-dir", str(tmp_path), "--message", "x"])
    assert code == 1
    assert "was deleted" in capsys.readouterr().err


def test_run_without_endpoint_and_unknown_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = Journal.create(tmp_path, backend="azure")
    assert (
        main(["invoke", "--run", journal.run_id, "--state-dir", str(tmp_path), "--message", "x"])
        == 1
    )
    assert "no endpoint" in capsys.readouterr().err
    assert main(["invoke", "--run", "nope", "--state-dir", str(tmp_path), "--message", "x"]) == 1
    assert "phi-finetune status" in capsys.readouterr().err


def test_target_and_input_are_required() -> None:
    with pytest.raises(SystemExit) as info:
        main(["invoke", "--message", "x"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["invoke", "--endpoint", "e", "--run", "r", "--message", "x"])


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    with FakeAzureML() as fake:
        fake.add_completed_job("job_1")  # the models below come from its output
        ml = fake.workspace_client()
        monkeypatch.setattr(invoke_cli, "_ml_client", lambda args: ml)
        monkeypatch.setattr(endpoints_cli, "_ml_client", lambda args: ml)
        session = requests.Session()
        monkeypatch.setattr(requests, "post", session.post)
        yield fake, ml


def _deploy(ml: Any, name: str, journal: Journal | None = None) -> Any:
    model = ModelRegistrar(ml, check_job_output=False).register(
        "job_1", base_model="Phi-3-mini-4k-instruct", version=1
    )
    return EndpointDeployer(ml, poll_interval_s=0.01).deploy(
        model,
        endpoint_name=name,
        run_id=journal.run_id if journal else None,
        observer=JournalObserver(journal) if journal else None,
    )


def test_invoke_azure_endpoint_and_run(
    azure: tuple[Any, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, ml = azure
    journal = Journal.create(tmp_path, backend="azure")
    _deploy(ml, "cli-endpoint", journal)
    capsys.readouterr()
    assert main(["invoke", "--endpoint", "cli-endpoint", "--message", "ping", "--json"]) == 0
    first = capsys.readouterr()
    assert json.loads(first.out)["deployment"] == "demo"
    assert (
        main(["invoke", "--run", journal.run_id, "--state-dir", str(tmp_path), "--message", "p"])
        == 0
    )
    second = capsys.readouterr()
    assert second.out.strip()
    for key in fake.endpoint_keys("cli-endpoint"):
        assert key not in first.out + first.err + second.out + second.err
        assert key not in journal.path.read_text()
    assert fake.scoring_calls and fake.scoring_calls[-1][1] == "demo"


def test_endpoints_list_marks_ones_that_should_be_gone(
    azure: tuple[Any, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, ml = azure
    held = Journal.create(tmp_path, "20260101T000000000Z-aaaaaa", backend="azure")
    leaked = Journal.create(tmp_path, "20260102T000000000Z-bbbbbb", backend="azure")
    _deploy(ml, "held-endpoint", held)
    _deploy(ml, "leaked-endpoint", leaked)
    leaked.mark_deleted("endpoint", "leaked-endpoint")  # journal says gone; it is not
    _deploy(ml, "foreign-endpoint")
    stale = Journal.create(tmp_path, "20260103T000000000Z-cccccc", backend="azure")
    stale.record_resource("endpoint", "vanished-endpoint")
    capsys.readouterr()
    assert main(["endpoints", "list", "--state-dir", str(tmp_path), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["leaked-endpoint"]["should_be_gone"] is True
    assert rows["held-endpoint"]["should_be_gone"] is False
    assert rows["held-endpoint"]["run_id"] == held.run_id
    assert rows["foreign-endpoint"]["created_by_phi_finetune"] is True
    assert rows["vanished-endpoint"]["exists"] is False
    assert main(["endpoints", "list", "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "SHOULD BE GONE" in text and "! leaked-endpoint" in text
    assert (
        main(["endpoints", "list", "--state-dir", str(tmp_path), "--journal-only", "--json"]) == 0
    )
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert names == {"held-endpoint", "vanished-endpoint"}
    assert (
        main(["endpoints", "delete", "leaked-endpoint", "--yes", "--state-dir", str(tmp_path)]) == 0
    )
    assert "leaked-endpoint" not in fake.endpoints
    assert "deleted" in capsys.readouterr().out
    for key in ("held-endpoint", "foreign-endpoint"):
        for secret in fake.endpoint_keys(key):
            assert secret not in text
