"""Server mode: a FakeAzureML served on 127.0.0.1 answers a CLI run in a subprocess, and keeps
the state of a subprocess that is SIGKILLed mid-run, so another process can clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi_finetune.testing import FakeAzureML

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]

_CONFIG = """\
backend = "azure"
state_dir = "state"
[model]
allow_retired = true
[compute]
cluster = "gpu-cluster"
vm_size = "Standard_NC24ads_A100_v4"
[data]
source = "demo"
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeAzureML, dict[str, str]]]:
    with FakeAzureML() as fake, fake.serve() as server:
        fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        (tmp_path / "phi-finetune.toml").write_text(_CONFIG, encoding="utf-8")
        env = {**os.environ, **server.env()}
        assert server.url.startswith("http://127.0.0.1:")
        yield fake, env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "phi_finetune.cli.main", "--config", "phi-finetune.toml", *args]


def _run_ids(tmp_path: Path) -> list[str]:
    runs = tmp_path / "state" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def _journal_names(tmp_path: Path, name: str) -> bool:
    for journal in (tmp_path / "state" / "runs").glob("*/journal.json"):
        try:
            if name in journal.read_text(encoding="utf-8"):
                return True
        except OSError:  # being replaced right now
            continue
    return False


def test_served_fake_answers_plan_and_run_in_a_subprocess(
    tmp_path: Path, served: tuple[FakeAzureML, dict[str, str]]
) -> None:
    fake, env = served
    fake.script_job("Completed", statuses=["Completed"])  # no polling sleeps in the child
    plan = subprocess.run(
        _cli("plan"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert plan.returncode == 0, plan.stderr
    assert "Standard_NC24ads_A100_v4" in plan.stdout
    assert fake.find_requests("GET", route="compute.list_sizes")  # the child's requests

    run = subprocess.run(
        _cli("run"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (job_name,) = fake.jobs
    assert f"job:      {job_name}" in run.stdout and "reply:    echo:" in run.stdout
    assert fake.scoring_calls and fake.endpoints == {} and fake.billable() == []
    assert fake.unrouted == []
    # the child's tokens came from this fake's credential, and nothing leaked into its output
    assert fake.credential().tokens_issued
    for secret in fake.secrets_issued():
        assert secret not in run.stdout + run.stderr


def test_sigkilled_run_leaves_its_resources_in_the_fake_for_teardown(
    tmp_path: Path, served: tuple[FakeAzureML, dict[str, str]]
) -> None:
    fake, env = served
    fake.script_job("Completed", statuses=["NotStarted", *["Running"] * 50])
    child = subprocess.Popen(
        _cli("run"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Kill once the journal names the submitted job (a kill between the job PUT and that
        # journal write is issue 15's "job the journal does not know", not this test's).
        deadline = time.monotonic() + 240
        while child.poll() is None and time.monotonic() < deadline:
            if fake.jobs and any(_journal_names(tmp_path, name) for name in fake.jobs):
                break
            time.sleep(0.1)
        assert fake.jobs, "the child never submitted its job"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    (job_name,) = fake.jobs
    assert fake.jobs[job_name].status in {"NotStarted", "Running"}
    assert job_name in " ".join(fake.billable())  # still billing after the kill
    (run_id,) = _run_ids(tmp_path)

    teardown = subprocess.run(
        _cli("teardown", run_id, "--yes"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert teardown.returncode == 0, teardown.stderr[-3000:]
    assert fake.jobs[job_name].canceled, teardown.stdout
    assert fake.billable() == []


def test_expiring_the_served_credential_reaches_the_child(
    tmp_path: Path, served: tuple[FakeAzureML, dict[str, str]]
) -> None:
    fake, env = served
    fake.credential().expire()
    plan = subprocess.run(
        _cli("plan"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert plan.returncode != 0
    denied = fake.find_requests(route="auth.denied")
    assert denied and {r.status for r in denied} == {401}


def test_serve_without_start_and_close_is_bounded() -> None:
    import requests

    fake = FakeAzureML()
    server = fake.serve()
    try:
        reply = requests.get(server.url + "/", timeout=5)  # no target header: 400, not a hang
        assert reply.status_code == 400
        env = server.env()
        assert env["PHI_FINETUNE_FAKE_AZUREML_URL"] == server.url
        assert env["AZUREML_WORKSPACE_NAME"] == fake.workspace_name
    finally:
        server.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/", timeout=5)


def test_the_server_mode_hook_refuses_a_url_that_is_not_loopback() -> None:
    from phi_finetune.errors import ConfigurationError
    from phi_finetune.testing._client_hook import activate

    with pytest.raises(ConfigurationError, match="not a loopback address"):
        activate("https://collector.example.com:8443")
