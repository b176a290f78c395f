"""The serverless backend through FineTuneSession, against a stateful autospec'd MLClient.

The whole flow; the SDK job always gets validation data (azure-sdk-for-python#45770); every
resource journaled ``creating`` before its request; a kill right after each create request, then
a resume: exactly one job, one model, one endpoint; teardown leaves nothing billable and deletes
the marketplace subscription only on request; scoring through the chat route with the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from _serverless_stub import WORKSPACE_ID, ChatSession, Crash, ServerlessStub

from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.config.serverless import ServerlessConfig
from phi_finetune.serverless.backend import ServerlessBackend
from phi_finetune.serverless.endpoint import ServerlessEndpointHandle
from phi_finetune.session import FineTuneSession


def _config(tmp_path: Path, *, deploy: bool = True, **serverless: Any) -> RunConfig:
    return RunConfig(
        backend="serverless",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
        deploy=DeployConfig(enabled=deploy),
        serverless=ServerlessConfig(**serverless),
    )


def _backend(stub: ServerlessStub, chat: ChatSession) -> ServerlessBackend:
    return ServerlessBackend(
        workspace=stub.workspace(),
        poll_interval_s=0,
        endpoint_options={"session": chat, "sleep": lambda s: None},
    )


def _session(tmp_path: Path, stub: ServerlessStub, chat: ChatSession, **kw: Any) -> FineTuneSession:
    return FineTuneSession(_config(tmp_path, **kw), backend=_backend(stub, chat))


def _resume(session: FineTuneSession, stub: ServerlessStub, chat: ChatSession) -> FineTuneSession:
    return FineTuneSession.resume(
        session.run_id, state_dir=session.state_dir, backend=_backend(stub, chat)
    )


def test_whole_flow_fine_tunes_deploys_scores_and_tears_down(tmp_path: Path) -> None:
    stub, chat = ServerlessStub(), ChatSession()
    session = _session(tmp_path, stub, chat)
    result = session.run()

    assert result.backend == "serverless"
    assert [j.name for j in stub.submitted] == [result.job_name]
    job = stub.submitted[0]
    # The SDK path never sees a missing validation input.
    assert job.validation_data is not None
    assert job.validation_data.path == result.prepared.assets["validation_file_path"]
    assert job.training_data.path == result.prepared.assets["train_file_path"]
    assert result.prepared.counts["validation"] > 0
    # The job registers the model; register reads it back (no model create call).
    assert result.model is not None and result.model.version == "1"
    assert result.model.name == job.outputs["registered_model"].name
    assert not stub.ml_client.models.create_or_update.called
    # The endpoint took the workspace-scoped id of the fine-tuned model.
    created = stub.ml_client.serverless_endpoints.begin_create_or_update.call_args.args[0]
    assert created.model_id == (
        f"azureml://locations/eastus2/workspaces/{WORKSPACE_ID}/models/"
        f"{result.model.name}/versions/1"
    )
    # Scored through /v1/chat/completions with the key, parsed into the reply.
    assert chat.calls and all(c["url"].endswith("/v1/chat/completions") for c in chat.calls)
    assert chat.calls[0]["headers"]["Authorization"].endswith(f"secret-key-of-{created.name}")
    assert result.reply and result.reply.startswith("echo: ")
    # Teardown: nothing billable left; Phi needs no marketplace subscription.
    assert stub.billable() == []
    assert stub.subscriptions == {}
    journal_text = (session.run_dir / "journal.json").read_text()
    assert "secret-key-of" not in journal_text


def test_validation_is_carved_when_the_data_has_none(tmp_path: Path) -> None:
    stub, chat = ServerlessStub(), ChatSession()
    session = _session(tmp_path, stub, chat, deploy=False)
    prepared = session.prepare_data()
    assert "validation" in prepared.files
    train = Path(prepared.files["train"]).read_text().splitlines()
    validation = Path(prepared.files["validation"]).read_text().splitlines()
    assert validation and not set(train) & set(validation)


def test_job_and_endpoint_are_journaled_before_their_requests(tmp_path: Path) -> None:
    stub, chat = ServerlessStub(), ChatSession()
    session = _session(tmp_path, stub, chat)
    seen: dict[str, Any] = {}

    def job_put(job: Any, **kw: Any) -> Any:
        seen["job"] = session.journal.resource("job", job.name)
        return stub._job_create(job, **kw)

    def endpoint_put(endpoint: Any, **kw: Any) -> Any:
        seen["endpoint"] = session.journal.resource("endpoint", endpoint.name)
        return stub._endpoint_create(endpoint, **kw)

    stub.ml_client.jobs.create_or_update.side_effect = job_put
    stub.ml_client.serverless_endpoints.begin_create_or_update.side_effect = endpoint_put
    session.run()
    assert seen["job"] is not None and seen["job"].state == "creating" and seen["job"].billable
    assert seen["endpoint"] is not None and seen["endpoint"].state == "creating"


@pytest.mark.parametrize(
    "operation", ["jobs.create_or_update", "serverless_endpoints.begin_create_or_update"]
)
def test_kill_after_each_create_then_resume_makes_exactly_one_of_each(
    tmp_path: Path, operation: str
) -> None:
    stub, chat = ServerlessStub(), ChatSession()
    session = _session(tmp_path, stub, chat)
    stub.crash_after = operation
    with pytest.raises(Crash):
        session.run(teardown_on_error=False)
    resumed = _resume(session, stub, chat)
    result = resumed.run()
    assert len(stub.submitted) == 1
    assert sum(len(v) for v in stub.models.values()) == 1
    assert stub.ml_client.serverless_endpoints.begin_create_or_update.call_count == 1
    assert result.reply and stub.billable() == []


@pytest.mark.parametrize("step", ["prepare_data", "plan", "fine_tune", "register", "deploy"])
def test_failure_at_each_step_then_resume(tmp_path: Path, step: str) -> None:
    stub, chat = ServerlessStub(), ChatSession()
    session = _session(tmp_path, stub, chat)
    backend = session.backend
    original = getattr(backend, step)

    def broken(ctx: Any) -> Any:
        original(ctx)  # the step's requests happen; then the process dies
        raise Crash(step)

    setattr(backend, step, broken)
    with pytest.raises(Crash):
        session.run(teardown_on_error=False)
    result = _resume(session, stub, chat).run()
    assert len(stub.submitted) == 1
    assert sum(len(v) for v in stub.models.values()) == 1
    assert stub.ml_client.serverless_endpoints.begin_create_or_update.call_count == 1
    assert result.job_name == stub.submitted[0].name
    assert stub.billable() == []


def test_a_failed_job_is_replaced_by_a_new_name_on_resume(tmp_path: Path) -> None:
    from phi_finetune.errors import JobFailedError

    stub, chat = ServerlessStub(), ChatSession()
    session = _session(tmp_path, stub, chat, deploy=False)
    real_get = stub._job_get

    def failing(name: str, **kw: Any) -> Any:
        job = real_get(name, **kw)
        if len(stub.submitted) == 1:
            job.status = "Failed"
        return job

    stub.ml_client.jobs.get.side_effect = failing
    with pytest.raises(JobFailedError):
        session.run()
    failed = session.journal.resource("job", stub.submitted[0].name)
    assert failed is not None and not failed.billable and failed.details["status"] == "Failed"
    stub.ml_client.jobs.get.side_effect = real_get
    result = _resume(session, stub, chat).run()
    first, second = (j.name for j in stub.submitted)
    assert second == f"{first}-2" and result.job_name == second


def test_teardown_of_a_killed_run_deletes_the_endpoint_and_cancels_the_job(
    tmp_path: Path,
) -> None:
    stub, chat = ServerlessStub(polls_before_done=10**6), ChatSession()
    session = _session(tmp_path, stub, chat)
    session.backend.job_timeout_s = 0  # type: ignore[attr-defined]
    from phi_finetune.errors import WaitTimeoutError

    with pytest.raises(WaitTimeoutError):
        session.run()
    assert stub.billable() == [f"job:{stub.submitted[0].name}"]
    deleted = FineTuneSession.teardown_run(
        session.run_id, state_dir=session.state_dir, backend=_backend(stub, chat)
    )
    assert deleted == [f"job:{stub.submitted[0].name}"]
    assert stub.billable() == []


def test_third_party_model_subscribes_and_teardown_deletes_it_on_request(
    tmp_path: Path,
) -> None:
    stub = ServerlessStub(regions="westus3", location="westus3", author="Meta")
    chat = ChatSession()
    session = FineTuneSession(
        _config(tmp_path, model="Llama-3.1-8b-instruct", delete_marketplace_subscription=True),
        backend=_backend(stub, chat),
    )
    session.run()
    sub = stub.ml_client.marketplace_subscriptions.begin_create_or_update.call_args.args[0]
    assert sub.name == "Llama-3-1-8b-instruct-sub"
    assert sub.model_id == "azureml://registries/azureml/models/Llama-3.1-8b-instruct"
    assert stub.subscriptions == {} and stub.billable() == []


def test_subscription_is_kept_unless_asked(tmp_path: Path) -> None:
    stub = ServerlessStub(regions="westus3", location="westus3", author="Meta")
    chat = ChatSession()
    session = FineTuneSession(
        _config(tmp_path, model="Llama-3.1-8b-instruct"), backend=_backend(stub, chat)
    )
    session.run()
    assert list(stub.subscriptions) == ["Llama-3-1-8b-instruct-sub"]
    assert stub.billable() == []


def test_endpoint_handle_invoke_maps_to_chat_and_never_posts_score() -> None:
    chat = ChatSession()
    handle = ServerlessEndpointHandle(
        "ep-one", "https://ep-one.eastus2.models.ai.azure.com", "k-123", session=chat
    )
    result = handle.invoke(
        [[{"role": "user", "content": "hello there"}], [{"role": "user", "content": "second"}]],
        max_new_tokens=8,
        do_sample=False,
    )
    assert result.outputs == ("echo: hello there", "echo: second")
    assert all(c["url"].endswith("/v1/chat/completions") for c in chat.calls)
    assert chat.calls[0]["body"]["max_tokens"] == 8
    assert chat.calls[0]["body"]["temperature"] == 0
    assert "k-123" not in repr(handle)
    pieces = list(handle.stream([{"role": "user", "content": "streamed"}]))
    assert pieces == ["echo: streamed"]


def test_endpoint_handle_reports_a_missing_route_instead_of_trying_score() -> None:
    from _serverless_stub import _Response

    from phi_finetune.errors import InvocationError

    class Gone(ChatSession):
        def post(self, url: str, data: bytes, headers: dict[str, str], **kw: Any) -> Any:
            self.calls.append({"url": url})
            return _Response(404, b'{"error": {"message": "gone"}}')

    gone = Gone()
    handle = ServerlessEndpointHandle("ep-two", "https://ep-two.example", "k", session=gone)
    with pytest.raises(InvocationError, match="HTTP 404"):
        handle.chat([{"role": "user", "content": "hi"}])
    assert [c["url"] for c in gone.calls] == ["https://ep-two.example/v1/chat/completions"]


def test_cli_teardown_deletes_the_subscription_only_with_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from phi_finetune import session as session_module
    from phi_finetune.cli.main import main as cli

    stub = ServerlessStub(regions="westus3", location="westus3", author="Meta")
    chat = ChatSession()
    monkeypatch.setattr(
        session_module, "_make_backend", lambda config, workspace=None: _backend(stub, chat)
    )
    config = attrs_evolve_deploy(_config(tmp_path, model="Llama-3.1-8b-instruct"))
    session = FineTuneSession(config, backend=_backend(stub, chat))
    session.run()
    assert list(stub.subscriptions) == ["Llama-3-1-8b-instruct-sub"]
    state = str(session.state_dir)
    # The endpoint is kept (keep_endpoint); a plain teardown leaves the subscription alone.
    assert cli(["teardown", session.run_id, "--state-dir", state, "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == [
        f"endpoint:{session.plan().details['serverless']['endpoint_name']}"
    ]
    assert list(stub.subscriptions) == ["Llama-3-1-8b-instruct-sub"]
    flag = "--delete-marketplace-subscription"
    assert cli(["teardown", session.run_id, "--state-dir", state, "--yes", flag, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deleted"] == ["marketplace_subscription:Llama-3-1-8b-instruct-sub"]
    assert stub.subscriptions == {} and stub.billable() == []


def attrs_evolve_deploy(config: RunConfig) -> RunConfig:
    import attrs

    return attrs.evolve(config, deploy=attrs.evolve(config.deploy, keep_endpoint=True))
