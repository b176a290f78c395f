"""The serverless flow end to end against FakeAzureML through the real azure-ai-ml: from Python
(FineTuneSession) and from the CLI; a kill after each step then a resume gives one job, one
model, one endpoint; teardown leaves ``fake.billable()`` empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune.azure.workspace import Workspace
from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.config.serverless import ServerlessConfig
from phi_finetune.serverless.backend import ServerlessBackend
from phi_finetune.session import FineTuneSession
from phi_finetune.testing import FakeAzureML


class Killed(BaseException):
    """A simulated kill."""


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML(location="eastus2") as service:
        service.set_workspace_kind("Project")
        yield service


@pytest.fixture
def workspace(fake: FakeAzureML) -> Workspace:
    return Workspace.from_clients(fake.workspace_client(), fake.registry_client())


def _config(tmp_path: Path, **deploy: Any) -> RunConfig:
    return RunConfig(
        backend="serverless",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
        deploy=DeployConfig(**deploy),
        serverless=ServerlessConfig(hyperparameters={"num_train_epochs": 1}),
    )


def _backend(workspace: Workspace) -> ServerlessBackend:
    return ServerlessBackend(workspace=workspace, poll_interval_s=0)


def _jobs_created(fake: FakeAzureML) -> list[str]:
    return [
        r.path.rsplit("/", 1)[-1]
        for r in fake.requests
        if r.method == "PUT" and "/jobs/" in r.path and r.status == 201
    ]


def _endpoints_created(fake: FakeAzureML) -> list[str]:
    return [
        r.path.rsplit("/", 1)[-1]
        for r in fake.requests
        if r.method == "PUT" and "/serverlessEndpoints/" in r.path and r.status in (200, 201)
    ]


def test_session_runs_the_whole_serverless_flow(
    tmp_path: Path, workspace: Workspace, fake: FakeAzureML
) -> None:
    session = FineTuneSession(_config(tmp_path), backend=_backend(workspace))
    result = session.run()
    assert result.backend == "serverless"
    assert result.reply
    assert result.model is not None and result.job_name is not None
    assert _jobs_created(fake) == [result.job_name]
    assert len(_endpoints_created(fake)) == 1
    assert fake.billable() == []
    assert fake.serverless_endpoints == {}
    assert fake.marketplace_subscriptions == {}
    text = (session.run_dir / "journal.json").read_text()
    assert not any(secret in text for secret in fake.secrets_issued())


@pytest.mark.parametrize("step", ["prepare_data", "plan", "fine_tune", "register", "deploy"])
def test_kill_after_each_step_then_resume(
    tmp_path: Path, workspace: Workspace, fake: FakeAzureML, step: str
) -> None:
    session = FineTuneSession(_config(tmp_path), backend=_backend(workspace))
    backend: Any = session.backend
    real = getattr(backend, step)

    def killed(ctx: Any) -> Any:
        real(ctx)
        raise Killed(step)

    setattr(backend, step, killed)
    with pytest.raises(Killed):
        session.run(teardown_on_error=False)
    resumed = FineTuneSession.resume(
        session.run_id, state_dir=session.state_dir, backend=_backend(workspace)
    )
    result = resumed.run()
    assert _jobs_created(fake) == [result.job_name]
    assert len(_endpoints_created(fake)) == 1
    models = resumed.journal.resources(kind="model")
    assert len(models) == 1
    assert fake.billable() == []


def test_plain_workspace_is_refused_online(
    tmp_path: Path, workspace: Workspace, fake: FakeAzureML
) -> None:
    from phi_finetune.serverless.errors import NotHubWorkspaceError

    fake.set_workspace_kind("Default")
    session = FineTuneSession(_config(tmp_path), backend=_backend(workspace))
    with pytest.raises(NotHubWorkspaceError):
        session.plan()
    assert _jobs_created(fake) == []


def test_endpoint_chat_stream_and_invoke_against_the_fake(
    tmp_path: Path, workspace: Workspace, fake: FakeAzureML
) -> None:
    from phi_finetune.scoring import ScoreResult

    session = FineTuneSession(_config(tmp_path, keep_endpoint=True), backend=_backend(workspace))
    session.register()
    endpoint = session.deploy()
    messages = [{"role": "user", "content": "Say something about tea."}]
    chat = endpoint.chat(messages, max_tokens=16, temperature=0)
    assert isinstance(chat, ScoreResult) and chat.shape == "chat" and chat.text
    pieces = list(endpoint.stream(messages, max_tokens=16))
    assert pieces and "".join(pieces)
    invoked = endpoint.invoke(messages, max_new_tokens=16)
    assert invoked.text
    chat_posts = [r for r in fake.requests if r.method == "POST" and "models.ai.azure.com" in r.url]
    assert chat_posts and all(r.url.endswith("/v1/chat/completions") for r in chat_posts)
    session.teardown()
    assert fake.billable() == []
