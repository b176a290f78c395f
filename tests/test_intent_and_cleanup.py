"""Intent before action, clean-up that never destroys progress, teardown that finishes.

Against FakeAzureML through the real azure-ai-ml: every create is journaled as "creating"
before its request; a job whose submit reply was lost (or Ctrl-C landed in that window) is
found by its run tag by teardown (canceled) and by resume (reattached, never submitted twice);
an error, ``WaitTimeoutError`` or Ctrl-C during ``run()`` keeps the fine-tune job; a failed
endpoint DELETE still deletes the rest, leaves the journal true, and a second teardown finishes.
The local backend's server and model version are journaled before they exist too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune.azure.backend import AzureBackend
from phi_finetune.azure.workspace import Workspace
from phi_finetune.backends import StepContext
from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.errors import JobError, PhiFinetuneError, RunStateError, WaitTimeoutError
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession
from phi_finetune.testing import FakeAzureML

TAG = "phi_finetune.run_id"


class Killed(BaseException):
    """A simulated process kill."""


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        yield service


@pytest.fixture
def workspace(fake: FakeAzureML) -> Workspace:
    return Workspace.from_clients(fake.workspace_client(), fake.registry_client())


def _backend(workspace: Workspace, **kwargs: Any) -> AzureBackend:
    return AzureBackend(workspace=workspace, poll_interval_s=0, **kwargs)


def _session(
    tmp_path: Path, workspace: Workspace, backend: AzureBackend | None = None, **deploy: Any
) -> FineTuneSession:
    config = RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
        deploy=DeployConfig(**deploy),
    )
    return FineTuneSession(config, backend=backend or _backend(workspace))


def _resume(session: FineTuneSession, workspace: Workspace) -> FineTuneSession:
    return FineTuneSession.resume(
        session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
    )


def _journal(session: FineTuneSession) -> Journal:
    return Journal.load(session.state_dir, session.run_id)


def _job_puts(fake: FakeAzureML) -> list[str]:
    return [r.path for r in fake.find_requests("PUT", route="jobs.create")]


def _reply_lost(monkeypatch: pytest.MonkeyPatch, raise_after: Callable[[], BaseException]) -> None:
    """The job-create request reaches the service (it creates the job), then every reply is
    lost: the client sees ``raise_after()`` (a connection reset, or a Ctrl-C in that window)."""
    from azure.ai.ml.operations import JobOperations

    real = JobOperations.create_or_update

    def lost(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise raise_after()

    monkeypatch.setattr(JobOperations, "create_or_update", lost)


def _connection_reset() -> BaseException:
    from azure.core.exceptions import ServiceResponseError

    return ServiceResponseError(
        "Connection aborted: ConnectionResetError(104, 'Connection reset by peer')",
        error=ConnectionResetError(104, "Connection reset by peer"),
    )


# ---------------------------------------------------------------------- intent before action


def test_every_create_is_journaled_as_creating_before_its_request(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.ai.ml.operations as ops

    session = _session(tmp_path, workspace)
    seen: dict[str, list[tuple[str, str]]] = {}
    targets = [
        ("data_asset", ops.DataOperations, "create_or_update"),
        ("job", ops.JobOperations, "create_or_update"),
        ("model", ops.ModelOperations, "create_or_update"),
        ("endpoint", ops.OnlineEndpointOperations, "begin_create_or_update"),
        ("deployment", ops.OnlineDeploymentOperations, "begin_create_or_update"),
    ]
    for kind, owner, method in targets:
        real = getattr(owner, method)

        def spy(self: Any, *args: Any, _kind: str = kind, _real: Any = real, **kw: Any) -> Any:
            on_disk = _journal(session).resources(kind=_kind, alive_only=True)
            seen.setdefault(_kind, []).extend((r.name, r.state) for r in on_disk)
            return _real(self, *args, **kw)

        monkeypatch.setattr(owner, method, spy)
    session.run()
    for kind, _, _ in targets:
        assert any(state == "creating" for _, state in seen.get(kind, [])), (kind, seen)
    # the job intent names the run tag that finds the job, not a name the service gives
    assert (f"{TAG}={session.run_id}", "creating") in seen["job"]
    journal = _journal(session)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert {r.state for r in journal.resources(kind="data_asset")} == {"created"}


@pytest.mark.parametrize(
    "lost", [_connection_reset, KeyboardInterrupt], ids=["reply-lost", "ctrl-c"]
)
def test_job_whose_submit_reply_was_lost_is_canceled_by_teardown(
    lost: Callable[[], BaseException],
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.script_job(statuses=["Running"] * 50)
    session = _session(tmp_path, workspace)
    _reply_lost(monkeypatch, lost)
    with pytest.raises((PhiFinetuneError, KeyboardInterrupt)):
        session.run()
    monkeypatch.undo()
    (job_name,) = fake.jobs
    assert fake.jobs[job_name].status == "Running"
    (intent,) = _journal(session).resources(kind="job", alive_only=True)
    assert intent.state == "creating" and intent.billable
    (run,) = FineTuneSession.list_runs(tmp_path / "state")
    assert [r.kind for r in run.billable_alive] == ["job"]  # status shows it may bill

    deleted = FineTuneSession.teardown_run(
        session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
    )
    assert deleted == [f"job:{job_name}"]
    assert fake.jobs[job_name].status in ("Canceled", "CancelRequested")
    journal = _journal(session)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert journal.resource("job", job_name) is not None
    assert journal.get_step("teardown").status == "completed"  # type: ignore[union-attr]
    # safe to repeat
    again = FineTuneSession.teardown_run(
        session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
    )
    assert again == []


def test_job_whose_submit_reply_was_lost_is_reattached_by_resume(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = _session(tmp_path, workspace)
    _reply_lost(monkeypatch, _connection_reset)
    with pytest.raises(PhiFinetuneError):
        session.run()
    monkeypatch.undo()
    (submitted,) = fake.jobs

    result = _resume(session, workspace).run()
    assert result.job_name == submitted
    assert len(_job_puts(fake)) == 1 and list(fake.jobs) == [submitted]
    journal = _journal(session)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert journal.status == "completed"


def test_resume_never_submits_blind_while_an_intent_is_unresolved(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = _session(tmp_path, workspace)
    _reply_lost(monkeypatch, _connection_reset)
    with pytest.raises(PhiFinetuneError):
        session.run()
    monkeypatch.undo()
    (submitted,) = fake.jobs

    # The lookup by tag fails: resuming must not submit a second job it cannot rule out.
    fake.inject_fault("GET", r"/jobs\?", status=403, times=None)
    with pytest.raises(JobError, match=f"{TAG}={session.run_id}") as info:
        _resume(session, workspace).run()
    assert "resume" in str(info.value) and "teardown" in str(info.value)
    assert len(_job_puts(fake)) == 1
    fake.clear_faults()

    result = _resume(session, workspace).run()
    assert result.job_name == submitted
    assert len(_job_puts(fake)) == 1


def test_job_intent_killed_before_the_request_is_cleared_without_a_second_job(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import JobOperations

    def killed(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise Killed

    monkeypatch.setattr(JobOperations, "create_or_update", killed)
    session = _session(tmp_path, workspace)
    with pytest.raises(Killed):
        session.run(teardown_on_error=False)
    monkeypatch.undo()
    assert dict(fake.jobs) == {}
    # teardown finds nothing by the tag: the intent is cleared, nothing is reported deleted
    assert (
        FineTuneSession.teardown_run(
            session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
        )
        == []
    )
    assert _journal(session).resources(billable_only=True, alive_only=True) == []


# ---------------------------------------------------------- clean-up never destroys progress


def test_ctrl_c_while_waiting_keeps_the_job_and_resume_reattaches(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.azure.job import JobHandle

    fake.script_job(statuses=["NotStarted", "Running", "Running", "Running"])
    session = _session(tmp_path, workspace)

    def interrupted_wait(self: JobHandle, *args: Any, **kwargs: Any) -> str:
        assert self.status() in ("NotStarted", "Running")
        raise KeyboardInterrupt

    monkeypatch.setattr(JobHandle, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        session.run()  # teardown_on_error=True: still the job is kept
    monkeypatch.undo()
    (job_name,) = fake.jobs
    assert fake.jobs[job_name].status not in ("Canceled", "CancelRequested")
    assert not fake.find_requests("POST", path_contains="/cancel")
    (job,) = _journal(session).resources(kind="job", alive_only=True)
    assert job.name == job_name and job.billable and job.state == "created"

    result = _resume(session, workspace).run()
    assert result.job_name == job_name
    assert len(_job_puts(fake)) == 1
    assert fake.jobs[job_name].status == "Completed"


def test_wait_timeout_keeps_the_job_and_resume_reattaches(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    fake.script_job(statuses=["Running"] * 4)
    session = _session(tmp_path, workspace, backend=_backend(workspace, job_timeout_s=0))
    with pytest.raises(WaitTimeoutError):
        session.run()
    (job_name,) = fake.jobs
    assert fake.jobs[job_name].status == "Running"
    assert not fake.find_requests("POST", path_contains="/cancel")
    (job,) = _journal(session).resources(kind="job", alive_only=True)
    assert job.name == job_name and job.billable

    result = _resume(session, workspace).run()
    assert result.job_name == job_name
    assert len(_job_puts(fake)) == 1


def test_error_after_deploy_still_deletes_the_endpoint_but_not_the_model(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.endpoint import Endpoint

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise PhiFinetuneError("scoring broke (injected)")

    monkeypatch.setattr(Endpoint, "invoke_file", broken)
    session = _session(tmp_path, workspace)
    with pytest.raises(PhiFinetuneError, match="injected"):
        session.run()
    assert dict(fake.endpoints) == {}
    assert len(fake.models) == 1  # progress kept: the registered model stays
    journal = _journal(session)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert journal.get_step("teardown").inputs["kinds"] == [  # type: ignore[union-attr]
        "deployment",
        "endpoint",
        "local_server",
    ]


# --------------------------------------------------------------------- teardown finishes


def test_failed_endpoint_delete_still_deletes_the_rest_and_a_second_teardown_finishes(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    session = _session(tmp_path, workspace, keep_endpoint=True)
    result = session.run()
    kept = result.endpoint_name
    assert kept is not None
    # A second billable resource journaled after the first endpoint.
    workspace.ml_client.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name="other-endpoint-1", auth_mode="key")
    ).result()
    session.journal.record_resource("endpoint", "other-endpoint-1", billable=True)

    fault = fake.inject_fault(
        "DELETE", rf"/onlineEndpoints/{kept}\?", status=403, times=None, message="denied"
    )
    with pytest.raises(RunStateError) as info:
        FineTuneSession.teardown_run(
            session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
        )
    message = str(info.value)
    assert fault.hits >= 1
    assert f"endpoint {kept!r}" in message  # which resource
    assert f"phi-finetune teardown {session.run_id}" in message  # what to do
    assert "other-endpoint-1" not in fake.endpoints  # the rest was still deleted
    assert kept in fake.endpoints
    journal = _journal(session)
    teardown = journal.get_step("teardown")
    assert teardown is not None and teardown.status == "failed"  # not stuck at running
    assert teardown.error is not None and kept in teardown.error
    alive = {(r.kind, r.name) for r in journal.resources(billable_only=True, alive_only=True)}
    assert alive == {("endpoint", kept), ("deployment", "demo")}  # failed ones stay live
    assert journal.resource("endpoint", "other-endpoint-1").state == "deleted"  # type: ignore[union-attr]

    fake.clear_faults()
    deleted = FineTuneSession.teardown_run(
        session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
    )
    assert deleted == [f"endpoint:{kept}", "deployment:demo"]
    assert dict(fake.endpoints) == {}
    journal = _journal(session)
    assert journal.get_step("teardown").status == "completed"  # type: ignore[union-attr]
    assert journal.resources(billable_only=True, alive_only=True) == []


def test_raw_transport_error_on_one_delete_does_not_skip_the_rest(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.azure.deployer import EndpointDeployer

    session = _session(tmp_path, workspace, keep_endpoint=True)
    kept = session.run().endpoint_name
    session.journal.record_resource("endpoint", "other-endpoint-2", billable=True)
    real = EndpointDeployer.delete

    def flaky(self: EndpointDeployer, name: str) -> None:
        if name == kept:
            raise _connection_reset()  # not a library error: must not escape the loop
        real(self, name)

    monkeypatch.setattr(EndpointDeployer, "delete", flaky)
    with pytest.raises(RunStateError, match="ServiceResponseError") as info:
        session.teardown()
    assert f"endpoint {kept!r}" in str(info.value)
    journal = _journal(session)
    assert journal.get_step("teardown").status == "failed"  # type: ignore[union-attr]
    assert journal.resource("endpoint", "other-endpoint-2").state == "deleted"  # type: ignore[union-attr]
    assert journal.resource("endpoint", kept).alive  # type: ignore[union-attr]


def test_ctrl_c_during_teardown_leaves_no_step_running(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = _session(tmp_path, workspace, keep_endpoint=True)
    result = session.run()

    def interrupted(self: Any, ctx: Any, resource: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(AzureBackend, "delete_resource", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.teardown()
    monkeypatch.undo()
    journal = _journal(session)
    teardown = journal.get_step("teardown")
    assert teardown is not None and teardown.status == "failed"
    assert "teardown" in (teardown.error or "")
    assert journal.resource("endpoint", result.endpoint_name).alive  # type: ignore[union-attr]
    assert _resume(session, workspace).teardown() == [
        f"endpoint:{result.endpoint_name}",
        "deployment:demo",
    ]


# ----------------------------------------------------------------------------- local backend


def _local_ctx(tmp_path: Path, **records: Any) -> tuple[FineTuneSession, StepContext]:
    from phi_finetune.local.backend import LocalBackend

    session = FineTuneSession(
        RunConfig(backend="local", state_dir=tmp_path / "state"), backend=LocalBackend()
    )
    ctx = StepContext(
        config=session.config, journal=session.journal, run_dir=session.run_dir, records=records
    )
    return session, ctx


def test_local_server_is_journaled_before_it_starts_and_teardown_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.local.server import LocalServer
    from phi_finetune.steps import ModelRef

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    model = ModelRef(name="m", version="1", uri="models:/m/1", tracking_uri=tracking)
    session, ctx = _local_ctx(tmp_path, register=model)

    def killed_start(self: LocalServer, standby: object = None) -> LocalServer:
        raise Killed

    monkeypatch.setattr(LocalServer, "start", killed_start)
    with pytest.raises(Killed):
        session.backend.deploy(ctx)
    monkeypatch.undo()
    (server,) = _journal(session).resources(kind="local_server", alive_only=True)
    assert server.state == "creating" and server.billable
    assert server.details["model_uri"] == model.uri

    # Stand-ins for the server the kill left behind, and for another run's server.
    def stand_in(tracking_uri: str) -> subprocess.Popen[bytes]:
        script = ["-c", "import time; time.sleep(60)", "phi_finetune.local.server"]
        args = ["--model", model.uri, "--tracking-uri", tracking_uri]
        return subprocess.Popen([sys.executable, *script, *args])

    ours, other = stand_in(tracking), stand_in(f"sqlite:///{tmp_path}/other.db")
    try:
        deleted = FineTuneSession.teardown_run(session.run_id, state_dir=session.state_dir)
        assert deleted == [f"local_server:{server.name}"]
        assert ours.wait(timeout=10) != 0  # stopped by teardown
        assert other.poll() is None  # another registry's server is left alone
    finally:
        for process in (ours, other):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_local_model_version_is_journaled_before_the_registry_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.local.registry import LocalRegistry
    from phi_finetune.steps import JobRecord, TrainingSummary

    job = JobRecord(
        name="local-x",
        status="Completed",
        training=TrainingSummary(base_model="tiny", merged_dir=str(tmp_path / "merged")),
    )
    session, ctx = _local_ctx(tmp_path, fine_tune=job)
    seen: list[tuple[str, str | None, str]] = []

    def killed_log_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend((r.name, r.version, r.state) for r in _journal(session).resources())
        raise Killed

    monkeypatch.setattr(LocalRegistry, "log_model", killed_log_model)
    with pytest.raises(Killed):
        session.backend.register(ctx)
    ((name, version, state),) = seen
    assert version is None and state == "creating"
    assert name == _journal(session).resource("model").name  # type: ignore[union-attr]
