"""FineTuneSession on the Azure backend, against FakeAzureML through the real azure-ai-ml.

The whole run; a failure (exception, or a process kill simulated by restoring the journal as it
was on disk at the moment of the "kill") after each step, then ``resume().run()``, never creating a
second job, model version or endpoint; deployment failure; teardown; transient scoring errors;
bad names refused offline; no key or token in logs, reprs or journals; ``list_runs()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune.azure.backend import AzureBackend
from phi_finetune.azure.workspace import Workspace
from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.errors import ConfigurationError, DeploymentError, PhiFinetuneError
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession
from phi_finetune.testing import FakeAzureML


class Killed(BaseException):
    """A simulated process kill (nothing after it may be written)."""


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        yield service


@pytest.fixture
def workspace(fake: FakeAzureML) -> Workspace:
    return Workspace.from_clients(fake.workspace_client(), fake.registry_client())


def _config(tmp_path: Path, **deploy: Any) -> RunConfig:
    return RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
        deploy=DeployConfig(**deploy),
    )


def _backend(workspace: Workspace) -> AzureBackend:
    return AzureBackend(workspace=workspace, poll_interval_s=0)


def _session(tmp_path: Path, workspace: Workspace, **deploy: Any) -> FineTuneSession:
    return FineTuneSession(_config(tmp_path, **deploy), backend=_backend(workspace))


def _resume(session: FineTuneSession, workspace: Workspace) -> FineTuneSession:
    """A fresh process: a new backend that knows only the journal on disk."""
    return FineTuneSession.resume(
        session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
    )


def _creates(fake: FakeAzureML) -> dict[str, list[str]]:
    """What was ever created in the fake, from its request log (PUTs answered 201)."""
    made: dict[str, list[str]] = {"job": [], "model": [], "endpoint": [], "job_puts": []}
    for req in fake.requests:
        if req.method != "PUT":
            continue
        if req.route == "jobs.create":
            made["job_puts"].append(req.path)
            if req.status == 201:
                made["job"].append(req.path.rsplit("/", 1)[-1])
        elif req.route == "assets.version_put" and "/models/" in req.path and req.status == 201:
            made["model"].append(req.path)
        elif req.route == "endpoints.create" and req.status == 201:
            made["endpoint"].append(req.path.rsplit("/", 1)[-1])
    return made


def _assert_one_of_each(fake: FakeAzureML, *, endpoints_ever: int = 1) -> None:
    made = _creates(fake)
    assert len(fake.jobs) == 1, list(fake.jobs)
    assert len(made["job_puts"]) == 1, made["job_puts"]
    assert len(fake.models) == 1, list(fake.models)
    assert len(made["model"]) == 1, made["model"]
    assert len(made["endpoint"]) <= endpoints_ever, made["endpoint"]
    assert dict(fake.endpoints) == {}
    assert fake.billable() == []
    assert fake.unrouted == []


def _journal_on_disk(session: FineTuneSession) -> Callable[[], None]:
    """Snapshot the journal file now; the returned function puts that snapshot back."""
    path = session.journal.path
    data = path.read_bytes()
    return lambda: path.write_bytes(data)


# ------------------------------------------------------------------------------- whole run


def test_whole_run_against_the_fake(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    session = _session(tmp_path, workspace)
    result = session.run()

    # the job's inputs registered and journaled; test_gen (scoring samples) stays local
    assert {name for name, _ in fake.data_assets} == {"ultrachat-train", "ultrachat-test"}
    journal = Journal.load(tmp_path / "state", result.run_id)
    assert len(journal.resources(kind="data_asset")) == 2
    # one pipeline job, built as the reference does
    assert list(fake.jobs) == [result.job_name]
    (create,) = fake.find_requests("PUT", route="jobs.create")
    assert create.path.endswith(f"/jobs/{result.job_name}") and create.status == 201
    body = create.json["properties"]
    assert body["jobType"] == "Pipeline"
    node = next(iter(body["jobs"].values()))
    assert node["componentId"] == (
        "azureml://registries/azureml/components/chat_completion_pipeline/versions/0.0.82"
    )
    assert body["settings"]["force_rerun"] is True
    assert body["experimentName"] == "chat_completion_Phi-4"
    assert body["tags"]["phi_finetune.run_id"] == result.run_id
    for stage in ("model_import", "preprocess", "finetune", "model_evaluation"):
        assert node["inputs"][f"compute_{stage}"]["value"] == "gpu-cluster"
    assert node["inputs"]["mlflow_model_path"]["uri"].endswith("/models/Phi-4/versions/8")
    assert "/data/ultrachat-train/versions/" in node["inputs"]["train_file_path"]["uri"]
    # one model version
    assert len(fake.models) == 1
    (name, version), _model = next(iter(fake.models.items()))
    assert str(result.model) == f"{name}:{version}"
    assert result.model is not None and result.model.uri == f"azureml:{name}:{version}"
    assert name == "Phi-4-ultrachat-200k"
    # endpoint created, scored, then deleted (keep_endpoint=False)
    assert _creates(fake)["endpoint"] == [result.endpoint_name]
    assert dict(fake.endpoints) == {}
    assert len(fake.scoring_calls) == 1
    assert isinstance(result.reply, str) and result.reply
    request_file = session.run_dir / "sample_score.json"
    assert request_file.is_file()
    assert result.request["input_data"]["input_string"][0][-1]["role"] == "user"
    for step in ("prepare_data", "plan", "fine_tune", "register", "deploy", "score", "teardown"):
        assert journal.is_completed(step), step
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert journal.status == "completed"
    assert fake.billable() == []
    assert fake.unrouted == []


def test_keep_endpoint_then_teardown_run(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    session = _session(tmp_path, workspace, keep_endpoint=True)
    result = session.run()
    assert result.endpoint_name in fake.endpoints
    runs = FineTuneSession.list_runs(tmp_path / "state")
    assert [r.run_id for r in runs] == [result.run_id]
    assert [(r.kind, r.name) for r in runs[0].billable_alive if r.kind == "endpoint"] == [
        ("endpoint", result.endpoint_name)
    ]
    # resuming a finished run does nothing more (no second endpoint, no second scoring)
    again = _resume(session, workspace).run()
    assert again.endpoint_name == result.endpoint_name
    assert len(_creates(fake)["endpoint"]) == 1

    deleted = FineTuneSession.teardown_run(
        result.run_id, state_dir=tmp_path / "state", backend=_backend(workspace)
    )
    assert f"endpoint:{result.endpoint_name}" in deleted
    assert dict(fake.endpoints) == {}
    journal = Journal.load(tmp_path / "state", result.run_id)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert FineTuneSession.list_runs(tmp_path / "state")[0].billable_alive == ()
    # teardown again: nothing left, nothing fails
    assert (
        FineTuneSession.teardown_run(
            result.run_id, state_dir=tmp_path / "state", backend=_backend(workspace)
        )
        == []
    )


# ------------------------------------------------------------------- failures and resume

_BACKEND_STEPS = ("prepare_data", "plan", "fine_tune", "register", "deploy")


def _fail_after(
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    exc: Callable[[], BaseException],
    on_fail: Callable[[], None] = lambda: None,
) -> None:
    """Make ``step`` do its real work once, then raise ``exc()``."""
    calls = {"n": 0}
    if step in _BACKEND_STEPS:
        owner: Any = AzureBackend
        attr = step
    elif step == "score":
        from phi_finetune.endpoint import Endpoint

        owner, attr = Endpoint, "invoke_file"
    else:  # teardown
        owner, attr = AzureBackend, "delete_resource"
    real = getattr(owner, attr)

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            on_fail()
            raise exc()
        return out

    monkeypatch.setattr(owner, attr, wrapped)


@pytest.mark.parametrize("step", [*_BACKEND_STEPS, "score", "teardown"])
def test_exception_after_each_step_then_resume(
    step: str,
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = _session(tmp_path, workspace)
    _fail_after(monkeypatch, step, lambda: PhiFinetuneError(f"{step} broke (injected)"))
    with pytest.raises(PhiFinetuneError, match="injected"):
        session.run(teardown_on_error=False)
    monkeypatch.undo()

    result = _resume(session, workspace).run()
    assert result.reply
    _assert_one_of_each(fake)
    journal = Journal.load(tmp_path / "state", session.run_id)
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert journal.status == "completed"


@pytest.mark.parametrize("step", ["deploy", "score"])
def test_exception_after_deploy_cleans_up_then_resume_deploys_again(
    step: str,
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = _session(tmp_path, workspace)
    _fail_after(monkeypatch, step, lambda: PhiFinetuneError("broke (injected)"))
    with pytest.raises(PhiFinetuneError, match="injected"):
        session.run()  # teardown_on_error: nothing billable survives the failure
    assert dict(fake.endpoints) == {}
    assert session.journal.resources(billable_only=True, alive_only=True) == []
    monkeypatch.undo()

    assert _resume(session, workspace).run().reply
    # the first endpoint was deleted on failure, so the resumed run needed a new one
    _assert_one_of_each(fake, endpoints_ever=2)


@pytest.mark.parametrize("step", [*_BACKEND_STEPS, "score", "teardown"])
def test_process_killed_after_each_step_then_resume(
    step: str,
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = _session(tmp_path, workspace)
    restore: list[Callable[[], None]] = []
    _fail_after(
        monkeypatch, step, Killed, on_fail=lambda: restore.append(_journal_on_disk(session))
    )
    with pytest.raises(Killed):
        session.run(teardown_on_error=False)  # a killed process cleans nothing up
    restore[0]()  # the journal as the killed process left it
    monkeypatch.undo()

    assert _resume(session, workspace).run().reply
    _assert_one_of_each(fake)


def _run_killed_inside(
    monkeypatch: pytest.MonkeyPatch,
    operations: type,
    method: str,
    session: FineTuneSession,
    *,
    before: bool = False,
) -> None:
    """Run ``session`` until the process is "killed" inside ``operations.method``, then put the
    journal back as the killed process left it on disk and undo the patch."""
    restore: list[Callable[[], None]] = []
    _kill_inside(monkeypatch, operations, method, session, restore, before=before)
    with pytest.raises(Killed):
        session.run(teardown_on_error=False)  # a killed process cleans nothing up
    restore[0]()
    monkeypatch.undo()


def _kill_inside(
    monkeypatch: pytest.MonkeyPatch,
    operations: type,
    method: str,
    session: FineTuneSession,
    restore: list[Callable[[], None]],
    *,
    before: bool = False,
) -> None:
    """Kill the process inside an azure-ai-ml call: right before it (``before``) or right
    after the service accepted it (the reply is lost)."""
    real = getattr(operations, method)

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if before:
            restore.append(_journal_on_disk(session))
            raise Killed
        real(self, *args, **kwargs)
        restore.append(_journal_on_disk(session))
        raise Killed

    monkeypatch.setattr(operations, method, wrapped)


def test_kill_right_after_job_submission_reattaches(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import JobOperations

    session = _session(tmp_path, workspace)
    _run_killed_inside(monkeypatch, JobOperations, "create_or_update", session)
    assert len(fake.jobs) == 1
    (submitted,) = fake.jobs
    # the reply was lost: the journal does not name the job, only the intent with its run tag
    (intent,) = Journal.load(tmp_path / "state", session.run_id).resources(kind="job")
    assert intent.state == "creating" and intent.billable and intent.name != submitted
    assert intent.details["find_by_tags"] == {"phi_finetune.run_id": session.run_id}

    result = _resume(session, workspace).run()
    assert result.job_name == submitted
    _assert_one_of_each(fake)


def test_kill_right_before_job_submission_submits_on_resume(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import JobOperations

    session = _session(tmp_path, workspace)
    _run_killed_inside(monkeypatch, JobOperations, "create_or_update", session, before=True)
    assert dict(fake.jobs) == {}

    assert _resume(session, workspace).run().reply
    _assert_one_of_each(fake)


def test_kill_right_after_model_registration_reuses_the_version(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import ModelOperations

    session = _session(tmp_path, workspace)
    _run_killed_inside(monkeypatch, ModelOperations, "create_or_update", session)
    (registered,) = fake.models

    result = _resume(session, workspace).run()
    assert str(result.model) == "{}:{}".format(*registered)
    _assert_one_of_each(fake)


def test_kill_while_job_runs_reattaches(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.azure.job import JobHandle

    fake.script_job(statuses=["NotStarted", "Running", "Running", "Running"])
    session = _session(tmp_path, workspace)
    restore: list[Callable[[], None]] = []

    def killed_wait(self: JobHandle, *args: Any, **kwargs: Any) -> str:
        assert self.status() in ("NotStarted", "Running")
        restore.append(_journal_on_disk(session))
        raise Killed

    monkeypatch.setattr(JobHandle, "wait", killed_wait)
    with pytest.raises(Killed):
        session.run(teardown_on_error=False)  # a killed process cleans nothing up
    restore[0]()
    monkeypatch.undo()
    journal = Journal.load(tmp_path / "state", session.run_id)
    (job,) = journal.resources(kind="job", alive_only=True)
    assert job.billable  # a running job bills: teardown would cancel it
    assert [r.run_id for r in FineTuneSession.list_runs(tmp_path / "state")] == [session.run_id]

    result = _resume(session, workspace).run()
    assert result.job_name == job.name
    _assert_one_of_each(fake)


def test_failed_job_is_submitted_again_on_resume(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    from phi_finetune.errors import JobFailedError

    fake.script_job("Failed")
    session = _session(tmp_path, workspace)
    with pytest.raises(JobFailedError):
        session.run()
    (failed,) = fake.jobs
    result = _resume(session, workspace).run()
    assert result.job_name != failed
    assert fake.jobs[result.job_name].status == "Completed"
    assert len(fake.jobs) == 2
    assert dict(fake.endpoints) == {}


@pytest.mark.parametrize("before", [True, False], ids=["before-request", "after-accepted"])
def test_kill_while_creating_the_endpoint_reuses_it(
    before: bool,
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.ai.ml.operations import OnlineEndpointOperations

    session = _session(tmp_path, workspace)
    _run_killed_inside(
        monkeypatch, OnlineEndpointOperations, "begin_create_or_update", session, before=before
    )
    # the journal knows the endpoint (and its name) before the create request goes out
    journal = Journal.load(tmp_path / "state", session.run_id)
    (endpoint,) = journal.resources(kind="endpoint", alive_only=True)
    assert endpoint.billable
    assert list(fake.endpoints) == ([] if before else [endpoint.name])

    result = _resume(session, workspace).run()
    assert result.endpoint_name == endpoint.name
    _assert_one_of_each(fake)


def test_kill_before_deployment_finished_reuses_the_endpoint(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import OnlineDeploymentOperations

    session = _session(tmp_path, workspace)
    _run_killed_inside(monkeypatch, OnlineDeploymentOperations, "begin_create_or_update", session)
    (name,) = fake.endpoints
    assert FineTuneSession.list_runs(tmp_path / "state")[0].billable_alive

    result = _resume(session, workspace).run()
    assert result.endpoint_name == name
    _assert_one_of_each(fake)


def test_steps_one_by_one_across_processes(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    session = _session(tmp_path, workspace)
    session.prepare_data()
    session = _resume(session, workspace)
    session.plan()
    session = _resume(session, workspace)
    session.fine_tune()
    session = _resume(session, workspace)
    session.register()
    session = _resume(session, workspace)
    endpoint = session.deploy()
    session = _resume(session, workspace)
    assert session.deploy().name == endpoint.name  # reattached, not deployed again
    session.score_sample()
    session = _resume(session, workspace)
    assert session.teardown() == [f"endpoint:{endpoint.name}", "deployment:demo"]
    assert _resume(session, workspace).run().reply
    _assert_one_of_each(fake)


# ------------------------------------------------------------------ deployment failure


def test_deployment_failure_raises_with_logs_and_leaves_no_endpoint(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    fake.script_deployment("Failed", logs=["Loading model", "CUDA out of memory (fake)"])
    session = _session(tmp_path, workspace)
    with pytest.raises(DeploymentError) as info:
        session.run()
    assert any("CUDA out of memory (fake)" in line for line in info.value.log_lines)
    assert "CUDA out of memory (fake)" in str(info.value)
    assert dict(fake.endpoints) == {}
    assert fake.billable() == []
    journal = Journal.load(tmp_path / "state", session.run_id)
    (endpoint,) = journal.resources(kind="endpoint")
    assert endpoint.state == "deleted"
    assert journal.resources(billable_only=True, alive_only=True) == []
    deploy = journal.get_step("deploy")
    assert deploy is not None and deploy.status == "failed"
    assert "CUDA out of memory (fake)" in (deploy.error or "")


# --------------------------------------------------------------------------- invoke


def test_invoke_retries_transient_429_and_503(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    session = _session(tmp_path, workspace, keep_endpoint=True)
    endpoint = session.deploy()
    fake.inject_fault("POST", r"inference\.ml\.azure\.com/score", status=429, retry_after=0)
    fake.inject_fault("POST", r"inference\.ml\.azure\.com/score", status=503, retry_after=0)
    reply = endpoint.invoke([{"role": "user", "content": "Hello?"}])
    assert reply.text
    statuses = [r.status for r in fake.find_requests("POST", "/score")]
    assert statuses == [429, 503, 200]
    session.teardown()
    assert dict(fake.endpoints) == {}


@pytest.mark.parametrize("shape", ["output", "list"])
def test_score_parses_both_response_shapes(
    shape: Any, tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    fake.set_scorer(shape=shape)
    result = _session(tmp_path, workspace).run()
    assert isinstance(result.reply, str) and result.reply.startswith("echo:")


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("bad", ["x", "1-starts-with-digit", "ends-with-", "a" * 33, "has_under"])
def test_bad_endpoint_name_is_refused_before_any_request(
    bad: str, tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    with pytest.raises(ConfigurationError):
        _config(tmp_path, endpoint_name=bad)
    assert fake.find_requests(path_contains="onlineEndpoints") == []


def test_bad_endpoint_name_in_a_config_file_is_refused_before_any_request(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    config_file = tmp_path / "phi-finetune.toml"
    config_file.write_text('backend = "azure"\n[deploy]\nendpoint_name = "bad_name!"\n')
    fake.clear_requests()
    with pytest.raises(ConfigurationError, match="endpoint_name"):
        FineTuneSession.from_config(config_file, backend=_backend(workspace))
    assert fake.requests == []


def test_endpoint_name_is_checked_before_deploying(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a name that slipped past the config (e.g. an edited journal) is still refused offline
    import attrs

    session = _session(tmp_path, workspace)
    session.register()
    bad_deploy = DeployConfig()
    object.__setattr__(bad_deploy, "endpoint_name", "Bad_Name")
    session.config = attrs.evolve(session.config, deploy=bad_deploy)
    with pytest.raises(PhiFinetuneError, match="Bad_Name"):
        session.deploy()
    assert fake.find_requests(path_contains="onlineEndpoints") == []


# ---------------------------------------------------------------------- secrets scan


def test_no_key_or_token_in_logs_reprs_or_journals(
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    session = _session(tmp_path, workspace, keep_endpoint=True)
    result = session.run()
    endpoint = session.deploy()
    endpoint.invoke([{"role": "user", "content": "Hi"}])
    fake.inject_fault("POST", r"/score", status=503, retry_after=0)
    endpoint.invoke([{"role": "user", "content": "Hi again"}])
    key = fake.endpoint_keys(result.endpoint_name or "")[0]
    texts = [repr(session), repr(endpoint), str(endpoint.to_dict()), repr(result)]
    session.teardown()
    fake.script_deployment("Failed")
    with pytest.raises(DeploymentError) as info:
        _session(tmp_path, workspace).run()
    texts.append(str(info.value))

    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    texts += [p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    everything = "\n".join(texts)
    assert key in fake.secrets_issued()
    secrets = fake.secrets_issued()
    assert len(secrets) >= 3
    leaked = [s[:8] for s in secrets if s in everything]
    assert leaked == []
    assert "Bearer ey" not in everything
    for path in (tmp_path / "state").rglob("journal.json"):
        assert path.stat().st_mode & 0o077 == 0


# ------------------------------------------------------------------------- list_runs


def test_list_runs_shows_what_each_run_holds(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    done = _session(tmp_path, workspace)
    done.run()
    kept = _session(tmp_path, workspace, keep_endpoint=True)
    kept_result = kept.run()
    halfway = _session(tmp_path, workspace)
    halfway.register()

    runs = {r.run_id: r for r in FineTuneSession.list_runs(tmp_path / "state")}
    assert set(runs) == {done.run_id, kept.run_id, halfway.run_id}
    assert runs[done.run_id].status == "completed"
    assert runs[done.run_id].billable_alive == ()
    assert [(r.kind, r.name) for r in runs[kept.run_id].billable_alive] == [
        ("endpoint", kept_result.endpoint_name),
        ("deployment", "demo"),
    ]
    assert runs[halfway.run_id].status == "incomplete"
    assert runs[halfway.run_id].last_completed_step == "register"
    assert runs[halfway.run_id].billable_alive == ()
    kinds = {r.kind for r in runs[halfway.run_id].alive_resources}
    assert {"data_asset", "job", "model"} <= kinds
    FineTuneSession.teardown_run(
        kept.run_id, state_dir=tmp_path / "state", backend=_backend(workspace)
    )
    assert dict(fake.endpoints) == {}


@pytest.mark.parametrize("operations", ["OnlineEndpointOperations", "OnlineDeploymentOperations"])
def test_kept_endpoint_reused_after_a_kill_is_journaled_as_created(
    operations: str,
    tmp_path: Path,
    fake: FakeAzureML,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import azure.ai.ml.operations as ops

    session = _session(tmp_path, workspace, keep_endpoint=True)
    _run_killed_inside(monkeypatch, getattr(ops, operations), "begin_create_or_update", session)

    result = _resume(session, workspace).run()
    assert list(fake.endpoints) == [result.endpoint_name]
    assert len(_creates(fake)["endpoint"]) == 1
    journal = Journal.load(tmp_path / "state", session.run_id)
    states = {(r.kind, r.name): r.state for r in journal.resources(billable_only=True)}
    assert states == {
        ("endpoint", result.endpoint_name): "created",
        ("deployment", "demo"): "created",
    }
    FineTuneSession.teardown_run(
        session.run_id, state_dir=tmp_path / "state", backend=_backend(workspace)
    )
    assert dict(fake.endpoints) == {}


@pytest.mark.parametrize("reattached", [False, True], ids=["deployed", "reattached"])
def test_deleting_the_endpoint_handle_is_journaled(
    reattached: bool, tmp_path: Path, fake: FakeAzureML, workspace: Workspace
) -> None:
    session = _session(tmp_path, workspace, keep_endpoint=True)
    endpoint = session.deploy()
    if reattached:
        session = _resume(session, workspace)
        endpoint = session.deploy()
    with endpoint:  # deletes on exit
        assert endpoint.invoke([{"role": "user", "content": "Hi"}]).text
    assert dict(fake.endpoints) == {}
    (run,) = FineTuneSession.list_runs(tmp_path / "state")
    assert run.billable_alive == ()
    assert _resume(session, workspace).teardown() == []


def test_teardown_of_a_killed_run_cancels_its_running_job(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.azure.job import JobHandle

    fake.script_job(statuses=["Running"] * 50)
    session = _session(tmp_path, workspace)

    def killed_wait(self: JobHandle, *args: Any, **kwargs: Any) -> str:
        raise Killed

    monkeypatch.setattr(JobHandle, "wait", killed_wait)
    with pytest.raises(Killed):
        session.run(teardown_on_error=False)
    monkeypatch.undo()
    (job_name,) = fake.jobs
    (run,) = FineTuneSession.list_runs(tmp_path / "state")
    assert [(r.kind, r.name) for r in run.billable_alive] == [("job", job_name)]

    deleted = FineTuneSession.teardown_run(
        session.run_id, state_dir=tmp_path / "state", backend=_backend(workspace)
    )
    assert deleted == [f"job:{job_name}"]
    assert fake.jobs[job_name].status in ("Canceled", "CancelRequested")
    assert fake.billable() == []
    assert FineTuneSession.list_runs(tmp_path / "state")[0].billable_alive == ()


def test_deployment_failure_on_a_reused_endpoint_deletes_it(
    tmp_path: Path, fake: FakeAzureML, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import OnlineEndpointOperations

    session = _session(tmp_path, workspace, keep_endpoint=True)
    _run_killed_inside(monkeypatch, OnlineEndpointOperations, "begin_create_or_update", session)
    (name,) = fake.endpoints

    fake.script_deployment("Failed", logs=["model load failed (fake)"])
    with pytest.raises(DeploymentError) as info:
        _resume(session, workspace).run()
    assert "model load failed (fake)" in info.value.log_lines
    assert dict(fake.endpoints) == {}
    assert len(_creates(fake)["endpoint"]) == 1
    journal = Journal.load(tmp_path / "state", session.run_id)
    endpoint = journal.resource("endpoint", name)
    assert endpoint is not None and endpoint.state == "deleted"
    assert journal.resources(billable_only=True, alive_only=True) == []
