"""Workspace resolution (explicit, env, config.json discovery), credentials and lazy clients."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

import phi_finetune.azure.workspace as workspace_module
from phi_finetune.azure.workspace import MANAGEMENT_SCOPE, Workspace
from phi_finetune.config import (
    CONFIG_SEARCH_LEVELS,
    WorkspaceConfig,
    config_file_candidates,
    find_config_file,
)
from phi_finetune.errors import (
    AuthenticationError,
    ConfigurationError,
    ServiceError,
    ServiceUnavailableError,
    WorkspaceConfigNotFoundError,
)

SUB = "11111111-2222-3333-4444-555555555555"
SUB2 = "99999999-8888-7777-6666-555555555555"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlc2VjcmV0"
ENV = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_RESOURCE_GROUP": "rg-env",
    "AZUREML_WORKSPACE_NAME": "ws-env",
}
CONFIG = WorkspaceConfig(SUB, "rg-ml", "ws-ml")


def write_config(folder: Path, workspace: str = "ws-file", name: str = "config.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        json.dumps(
            {"subscription_id": SUB, "resource_group": "rg-file", "workspace_name": workspace}
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


# -- WorkspaceConfig: explicit and environment --------------------------------------------------


def test_explicit_values_need_no_file_or_env(tmp_path: Path) -> None:
    config = WorkspaceConfig.resolve(
        subscription_id=SUB,
        resource_group="rg",
        workspace_name="ws-1",
        registry_name="my-registry",
        path=tmp_path,
        environ={},
    )
    assert config == WorkspaceConfig(SUB, "rg", "ws-1", registry_name="my-registry")
    assert config.scope == (
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
        "Microsoft.MachineLearningServices/workspaces/ws-1"
    )


def test_from_env() -> None:
    config = WorkspaceConfig.from_env(ENV)
    assert config == WorkspaceConfig(SUB, "rg-env", "ws-env", registry_name="azureml")


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert WorkspaceConfig.from_env().workspace_name == "ws-env"


def test_from_env_names_missing_variables() -> None:
    with pytest.raises(WorkspaceConfigNotFoundError) as info:
        WorkspaceConfig.from_env({"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": ""})
    message = str(info.value)
    assert "AZURE_RESOURCE_GROUP (empty)" in message
    assert "AZUREML_WORKSPACE_NAME (not set)" in message
    assert "AZURE_SUBSCRIPTION_ID (set)" in message
    assert len(info.value.searched) == 3


def test_from_env_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkspaceConfig.from_env({**ENV, "AZURE_SUBSCRIPTION_ID": "<SUBSCRIPTION_ID>"})
    assert info.value.key == "AZURE_SUBSCRIPTION_ID"
    assert "GUID" in str(info.value)


def test_resolve_prefers_explicit_then_env_then_file(tmp_path: Path) -> None:
    write_config(tmp_path)
    # everything from the file
    assert WorkspaceConfig.resolve(path=tmp_path, environ={}).workspace_name == "ws-file"
    # the environment overrides the file
    config = WorkspaceConfig.resolve(path=tmp_path, environ=ENV)
    assert (config.resource_group, config.workspace_name) == ("rg-env", "ws-env")
    # explicit values override both, field by field
    config = WorkspaceConfig.resolve(workspace_name="ws-arg", path=tmp_path, environ=ENV)
    assert (config.resource_group, config.workspace_name) == ("rg-env", "ws-arg")
    partial_env = {"AZURE_RESOURCE_GROUP": "rg-env"}
    config = WorkspaceConfig.resolve(path=tmp_path, environ=partial_env)
    assert (config.resource_group, config.workspace_name) == ("rg-env", "ws-file")


def test_resolve_does_not_search_files_when_env_is_complete(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    assert WorkspaceConfig.resolve(path=tmp_path, environ=ENV).workspace_name == "ws-env"


# -- config.json discovery -------------------------------------------------------------------------


def test_config_json_found_up_the_tree(tmp_path: Path) -> None:
    write_config(tmp_path / "a")
    start = tmp_path / "a" / "b" / "c"
    start.mkdir(parents=True)
    assert WorkspaceConfig.from_config_file(start).workspace_name == "ws-file"


def test_config_json_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert WorkspaceConfig.from_config_file().workspace_name == "ws-file"
    assert Workspace.from_config().workspace_name == "ws-file"


def test_azureml_folder_wins_like_mlclient(tmp_path: Path) -> None:
    # MLClient.from_config searches .azureml/ all the way up before plain config.json files.
    write_config(tmp_path / ".azureml", workspace="ws-azureml")
    start = tmp_path / "a" / "b"
    write_config(start, workspace="ws-plain")
    assert WorkspaceConfig.from_config_file(start).workspace_name == "ws-azureml"


def test_aml_config_folder_and_project_json(tmp_path: Path) -> None:
    write_config(tmp_path / "aml_config", workspace="ws-aml", name="project.json")
    assert WorkspaceConfig.from_config_file(tmp_path).workspace_name == "ws-aml"


def test_custom_file_name(tmp_path: Path) -> None:
    write_config(tmp_path, workspace="ws-team", name="team.json")
    write_config(tmp_path, workspace="ws-default")
    config = WorkspaceConfig.from_config_file(tmp_path, file_name="team.json")
    assert config.workspace_name == "ws-team"


def test_path_may_be_the_file_itself(tmp_path: Path) -> None:
    path = write_config(tmp_path / "x", name="anything.json")
    assert WorkspaceConfig.from_config_file(path, registry_name="reg-1").registry_name == "reg-1"


def test_scope_form(tmp_path: Path) -> None:
    scope = (
        f"/subscriptions/{SUB}/resourceGroups/rg-scope/providers/"
        "Microsoft.MachineLearningServices/workspaces/ws-scope"
    )
    (tmp_path / "config.json").write_text(json.dumps({"Scope": scope}), encoding="utf-8")
    config = WorkspaceConfig.from_config_file(tmp_path)
    assert (config.subscription_id, config.resource_group, config.workspace_name) == (
        SUB,
        "rg-scope",
        "ws-scope",
    )
    assert config.scope == scope


def test_bad_scope(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"Scope": "/x/y"}), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not a workspace ARM id"):
        WorkspaceConfig.from_config_file(tmp_path)


def test_config_json_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "subscription_id": ,\n}', encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        WorkspaceConfig.from_config_file(tmp_path)
    assert f"{path}:2:" in str(info.value)


def test_config_json_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"subscription_id": SUB}), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        WorkspaceConfig.from_config_file(tmp_path)
    assert "resource_group, workspace_name" in str(info.value)
    assert info.value.source == str(path)


def test_config_json_bad_value_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"subscription_id": "abc", "resource_group": "rg", "workspace_name": "ws-1"}),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as info:
        WorkspaceConfig.from_config_file(tmp_path)
    assert str(path) in str(info.value)
    assert "subscription_id" in str(info.value)


def test_missing_start_path(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceConfigNotFoundError, match="no such file or folder"):
        WorkspaceConfig.from_config_file(tmp_path / "missing")


def test_candidates_follow_mlclient_order_and_depth(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(25)])
    deep.mkdir(parents=True)
    candidates = config_file_candidates(deep)
    folders = CONFIG_SEARCH_LEVELS + 1  # the start folder and 20 parents
    assert len(candidates) == 6 * folders
    assert candidates[0] == deep / ".azureml" / "config.json"
    assert candidates[folders] == deep / ".azureml" / "project.json"
    assert candidates[-1] == deep.parents[CONFIG_SEARCH_LEVELS - 1] / "project.json"
    write_config(tmp_path)  # 26 levels above: out of reach, as for MLClient
    assert find_config_file(deep) is None


def test_discovery_matches_azure_ai_ml(tmp_path: Path) -> None:
    from itertools import product

    from azure.ai.ml._file_utils.file_utils import traverse_up_path_and_find_file

    def mlclient_find(start: Path) -> Path | None:
        for directory, name in product(
            [".azureml", "aml_config", None], ["config.json", "project.json"]
        ):
            found = traverse_up_path_and_find_file(
                path=start, file_name=name, directory_name=directory, num_levels=20
            )
            if found:
                return Path(found)
        return None

    start = tmp_path / "p" / "q" / "r"
    start.mkdir(parents=True)
    layouts = [
        [tmp_path / "p" / "config.json"],
        [tmp_path / "p" / "q" / "project.json", tmp_path / ".azureml" / "project.json"],
        [tmp_path / "p" / "aml_config" / "config.json", tmp_path / "p" / "q" / "config.json"],
    ]
    for files in layouts:
        for file in files:
            write_config(file.parent, name=file.name)
        assert find_config_file(start) == mlclient_find(start)
        for file in files:
            file.unlink()


def test_nothing_found_lists_every_place(tmp_path: Path) -> None:
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True)
    with pytest.raises(WorkspaceConfigNotFoundError) as info:
        WorkspaceConfig.resolve(path=start, environ={"AZURE_RESOURCE_GROUP": "rg"})
    err = info.value
    message = str(err)
    assert "missing: subscription_id, workspace_name" in message
    assert "AZURE_SUBSCRIPTION_ID (not set)" in message
    assert "AZURE_RESOURCE_GROUP (set)" in message
    assert "AZUREML_WORKSPACE_NAME (not set)" in message
    assert ".azureml/config.json" in message
    assert "aml_config/project.json" in message
    for folder in (start, start.parent, tmp_path):
        assert f"      {folder}\n" in message
    assert "Download config.json" in message
    assert str(start / ".azureml" / "config.json") in err.searched
    assert str(tmp_path / "project.json") in err.searched
    assert "environment variable AZUREML_WORKSPACE_NAME" in err.searched
    assert isinstance(err, ConfigurationError)


def test_from_config_file_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceConfigNotFoundError) as info:
        WorkspaceConfig.from_config_file(tmp_path)
    assert str(tmp_path / "aml_config" / "config.json") in info.value.searched
    assert str(tmp_path) in str(info.value)


# -- Workspace construction --------------------------------------------------------------------


def test_workspace_constructors(tmp_path: Path) -> None:
    write_config(tmp_path)
    assert Workspace.from_config(tmp_path).config == WorkspaceConfig(SUB, "rg-file", "ws-file")
    assert Workspace.from_env(ENV).resource_group == "rg-env"
    ws = Workspace.resolve(workspace_name="ws-arg", path=tmp_path, environ={})
    assert (ws.subscription_id, ws.resource_group, ws.workspace_name, ws.registry_name) == (
        SUB,
        "rg-file",
        "ws-arg",
        "azureml",
    )
    assert Workspace.resolve(CONFIG).config is CONFIG


def test_workspace_needs_a_workspace_config() -> None:
    with pytest.raises(ConfigurationError, match="needs a WorkspaceConfig"):
        Workspace({"subscription_id": SUB})  # type: ignore[arg-type]


def test_constructing_a_workspace_imports_no_azure_sdk() -> None:
    code = f"""
import sys
from phi_finetune.config import WorkspaceConfig
from phi_finetune.azure.workspace import Workspace
ws = Workspace(WorkspaceConfig("{SUB}", "rg", "ws-1"))
repr(ws)
ws.config
bad = sorted(m for m in sys.modules if m.startswith(("azure.ai.ml", "azure.identity")))
assert not bad, bad
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


class SecretCredential:
    """A credential holding a secret that must never show up anywhere."""

    secret = "super-secret-client-secret"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls.append(scopes)
        return types.SimpleNamespace(token=TOKEN, expires_on=0)


def test_repr_shows_scope_not_secrets() -> None:
    cred = SecretCredential()
    ws = Workspace(CONFIG, credential=cred)
    text = repr(ws)
    assert SUB in text and "rg-ml" in text and "ws-ml" in text and "azureml" in text
    assert "credential=SecretCredential" in text
    assert cred.secret not in text and TOKEN not in text
    assert "credential=not resolved" in repr(Workspace(CONFIG))


# -- credentials ---------------------------------------------------------------------------------


class _FakeCredential:
    instances: list[_FakeCredential]
    error: Exception | None = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.scopes: list[tuple[str, ...]] = []
        type(self).instances.append(self)

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return types.SimpleNamespace(token=TOKEN, expires_on=0)


@pytest.fixture
def fake_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[type[_FakeCredential], type[_FakeCredential]]:
    import azure.identity

    class FakeDefault(_FakeCredential):
        instances: list[_FakeCredential] = []  # noqa: RUF012

    class FakeInteractive(_FakeCredential):
        instances: list[_FakeCredential] = []  # noqa: RUF012

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeDefault)
    monkeypatch.setattr(azure.identity, "InteractiveBrowserCredential", FakeInteractive)
    monkeypatch.setattr(workspace_module, "_stdin_is_tty", lambda: False)
    monkeypatch.setattr(workspace_module, "_in_notebook", lambda: False)
    return FakeDefault, FakeInteractive


Fakes = tuple[type[_FakeCredential], type[_FakeCredential]]


def _failing(message: str) -> ClientAuthenticationError:
    return ClientAuthenticationError(message=message)


def test_explicit_credential_wins(fake_identity: Fakes) -> None:
    default, interactive = fake_identity
    cred = SecretCredential()
    ws = Workspace(CONFIG, credential=cred)
    assert ws.credential is cred
    assert default.instances == [] and interactive.instances == []
    assert cred.calls == []  # an explicit credential is not probed


def test_default_credential_is_probed_once(fake_identity: Fakes) -> None:
    default, interactive = fake_identity
    ws = Workspace(CONFIG)
    assert default.instances == []  # nothing happens at construction
    cred = ws.credential
    assert cred is ws.credential
    assert len(default.instances) == 1
    assert default.instances[0].scopes == [(MANAGEMENT_SCOPE,)]
    assert interactive.instances == []
    assert "credential=FakeDefault" in repr(ws)


def test_fallback_to_interactive_when_allowed(
    fake_identity: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    default, interactive = fake_identity
    default.error = _failing(f"no az login; Bearer {TOKEN}")
    ws = Workspace(CONFIG, allow_interactive=True)
    with caplog.at_level(logging.INFO, logger="phi_finetune.azure.workspace"):
        cred = ws.credential
    assert cred is interactive.instances[0]
    assert interactive.instances[0].scopes == [(MANAGEMENT_SCOPE,)]
    records = [r for r in caplog.records if "interactive browser login" in r.getMessage()]
    assert records and records[0].levelno == logging.INFO
    assert TOKEN not in caplog.text


def test_no_fallback_when_not_allowed(fake_identity: Fakes) -> None:
    default, interactive = fake_identity
    default.error = _failing(f"EnvironmentCredential failed; token {TOKEN} Bearer abcdefghijklmnop")
    ws = Workspace(CONFIG, allow_interactive=False)
    with pytest.raises(AuthenticationError) as info:
        _ = ws.credential
    err = info.value
    assert interactive.instances == []
    assert err.__cause__ is default.error
    assert len(err.attempts) == 2
    assert err.attempts[0].startswith("DefaultAzureCredential: ClientAuthenticationError: ")
    assert "not tried" in err.attempts[1] and "allow_interactive=True" in err.attempts[1]
    message = str(err)
    assert "az login" in message
    assert TOKEN not in message and "abcdefghijklmnop" not in message
    assert all(TOKEN not in a for a in err.attempts)


def test_both_credentials_fail(fake_identity: Fakes) -> None:
    default, interactive = fake_identity
    default.error = _failing("DefaultAzureCredential failed to retrieve a token")
    interactive.error = RuntimeError("browser could not be opened\nsecond line")
    with pytest.raises(AuthenticationError) as info:
        _ = Workspace(CONFIG, allow_interactive=True).credential
    err = info.value
    assert (
        err.attempts[1] == "InteractiveBrowserCredential: RuntimeError: browser could not be opened"
    )
    assert err.__cause__ is interactive.error


def test_interactive_default_follows_the_tty(
    fake_identity: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, interactive = fake_identity
    default.error = _failing("nope")
    assert Workspace(CONFIG).interactive_allowed is False
    monkeypatch.setattr(workspace_module, "_stdin_is_tty", lambda: True)
    ws = Workspace(CONFIG)
    assert ws.interactive_allowed is True
    assert ws.credential is interactive.instances[0]
    assert Workspace(CONFIG, allow_interactive=False).interactive_allowed is False


def test_notebook_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    class ZMQInteractiveShell:
        config: dict[str, Any] = {}  # noqa: RUF012

    class TerminalInteractiveShell:
        config: dict[str, Any] = {}  # noqa: RUF012

    shell: Any = None
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert workspace_module._in_notebook() is False
    shell = TerminalInteractiveShell()
    assert workspace_module._in_notebook() is False
    shell = ZMQInteractiveShell()
    assert workspace_module._in_notebook() is True
    shell = TerminalInteractiveShell()
    shell.config = {"IPKernelApp": {}}
    assert workspace_module._in_notebook() is True
    monkeypatch.delitem(sys.modules, "IPython")
    assert workspace_module._in_notebook() is False


def test_notebook_allows_interactive(fake_identity: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace_module, "_in_notebook", lambda: True)
    assert Workspace(CONFIG).interactive_allowed is True


# -- lazy clients --------------------------------------------------------------------------------


class RecordingFactory:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, Any, WorkspaceConfig]] = []
        self.error = error

    def __call__(self, kind: str, credential: Any, config: WorkspaceConfig) -> Any:
        self.calls.append((kind, credential, config))
        if self.error is not None:
            raise self.error
        return types.SimpleNamespace(kind=kind)


def test_clients_are_created_lazily_once() -> None:
    factory = RecordingFactory()
    cred = SecretCredential()
    ws = Workspace(CONFIG, credential=cred, client_factory=factory)
    assert factory.calls == []
    client: Any = ws.ml_client
    assert client.kind == "workspace"
    assert ws.ml_client is client
    assert factory.calls == [("workspace", cred, CONFIG)]
    registry: Any = ws.registry_client
    assert registry.kind == "registry"
    assert ws.registry_client is registry
    assert [c[0] for c in factory.calls] == ["workspace", "registry"]


@pytest.mark.parametrize(
    ("error", "expected", "fragment"),
    [
        (
            ClientAuthenticationError(message="AADSTS700016 bad tenant"),
            AuthenticationError,
            "az login",
        ),
        (ResourceNotFoundError(message="registry missing"), ConfigurationError, "registry names"),
        (ServiceRequestError(message="dns failed"), ServiceUnavailableError, "could not reach"),
        (HttpResponseError(message="forbidden"), ServiceError, "HttpResponseError: forbidden"),
    ],
)
def test_azure_errors_are_wrapped(
    error: Exception, expected: type[Exception], fragment: str
) -> None:
    ws = Workspace(CONFIG, credential=SecretCredential(), client_factory=RecordingFactory(error))
    with pytest.raises(expected) as info:
        _ = ws.registry_client
    assert info.value.__cause__ is error
    assert fragment in str(info.value)
    assert "registry 'azureml'" in str(info.value)


def test_other_errors_propagate_unchanged() -> None:
    error = KeyError("boom")
    ws = Workspace(CONFIG, credential=SecretCredential(), client_factory=RecordingFactory(error))
    with pytest.raises(KeyError):
        _ = ws.ml_client


def test_client_creation_uses_the_resolved_credential(fake_identity: Fakes) -> None:
    default, _ = fake_identity
    factory = RecordingFactory()
    ws = Workspace(CONFIG, client_factory=factory)
    _ = ws.ml_client
    assert factory.calls[0][1] is default.instances[0]


def test_from_clients_reads_the_scope() -> None:
    ml = types.SimpleNamespace(
        subscription_id=SUB2, resource_group_name="rg-x", workspace_name="ws-x"
    )
    registry = types.SimpleNamespace(_operation_scope=types.SimpleNamespace(registry_name="reg-x"))
    ws = Workspace.from_clients(ml, registry)
    assert ws.ml_client is ml and ws.registry_client is registry  # type: ignore[comparison-overlap]
    assert ws.config == WorkspaceConfig(SUB2, "rg-x", "ws-x", registry_name="reg-x")


def test_from_clients_with_mocks_and_a_lazy_registry() -> None:
    from unittest import mock

    ml = mock.MagicMock()
    ws = Workspace.from_clients(ml)
    assert ws.config is None
    assert "from injected clients" in repr(ws)
    with pytest.raises(ConfigurationError, match="registry_client"):
        _ = ws.registry_client
    factory = RecordingFactory()
    ws = Workspace.from_clients(
        ml, config=CONFIG, credential=SecretCredential(), client_factory=factory
    )
    assert getattr(ws.registry_client, "kind") == "registry"  # noqa: B009
    assert ws.ml_client is ml


def test_default_factory_builds_a_workspace_mlclient_offline() -> None:
    client = workspace_module.default_client_factory("workspace", SecretCredential(), CONFIG)
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        SUB,
        "rg-ml",
        "ws-ml",
    )
    # conftest sets PHI_FINETUNE_NO_PROGRESS: the SDK's upload bars follow it
    assert client._operation_config.show_progress is False
    with pytest.raises(ValueError, match="unknown client kind"):
        workspace_module.default_client_factory("other", SecretCredential(), CONFIG)  # type: ignore[arg-type]
