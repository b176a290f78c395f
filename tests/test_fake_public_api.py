"""Pins the public surface of ``phi_finetune.testing``: users' tests depend on these names.

A change here is a breaking change for users of ``FakeAzureML``; it needs a CHANGELOG entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import pytest

import phi_finetune.testing as testing
from phi_finetune.testing import FakeAzureML

EXPORTS = {
    "FakeAzureML": (
        "(*, subscription_id: 'str' = '00000000-0000-0000-0000-000000000001', "
        "resource_group: 'str' = 'rg-phi-fake', workspace_name: 'str' = 'ws-phi-fake', "
        "location: 'str' = 'eastus', "
        "registry_subscription_id: 'str' = '00000000-0000-0000-0000-000000000002', "
        "registry_resource_group: 'str' = 'registry-rg', seed: 'bool' = True) -> 'None'"
    ),
    "FakeCredential": "(*, lifetime_s: 'int' = 3600) -> 'None'",
    "FakeRequest": (
        "(method: 'str', url: 'str', host: 'str', path: 'str', query: 'dict[str, str]', "
        "headers: 'dict[str, str]', body: 'bytes', json: 'Any', route: 'str | None' = None, "
        "status: 'int | None' = None) -> None"
    ),
    "Fault": (
        "(method: 'str | None', pattern: 're.Pattern[str]', status: 'int', "
        "times: 'int | None', retry_after: 'float | None', connection_reset: 'bool', "
        "reply: 'Reply', hits: 'int' = 0, "
        "lost_reply: \"Literal['reset', 'timeout'] | None\" = None, "
        "read_timeout: 'bool' = False) -> None"
    ),
    "JobState": (
        "(name: 'str', body: 'dict[str, Any]', script: 'JobScript', position: 'int' = 0, "
        "canceled: 'bool' = False, children: 'list[dict[str, Any]]' = NOTHING, "
        "cancel_polls: 'int' = 0, hold: 'Hold | None' = None, "
        "waiting: 'Callable[[], bool] | None' = None, created: 'int' = 0, "
        "node: 'str' = 'chat_completion_pipeline', "
        "on_completed: 'Callable[[], None] | None' = None) -> None"
    ),
    "Reply": (
        "(status: 'int' = 200, json: 'Any' = None, body: 'bytes | None' = None, "
        "headers: 'dict[str, str]' = NOTHING) -> None"
    ),
    "Scorer": None,  # a type alias: Callable[[Any, str | None], Any]
    "autospec_ml_client": (
        "(*, subscription_id: 'str' = '00000000-0000-0000-0000-000000000001', "
        "resource_group_name: 'str' = 'rg-phi-fake', "
        "workspace_name: 'str | None' = 'ws-phi-fake') -> 'Any'"
    ),
    "echo_scorer": "(shape: \"Literal['output', 'list']\" = 'output') -> 'Scorer'",
    "make_jwt": (
        "(audience: 'str', *, lifetime_s: 'int' = 3600, now: 'float | None' = None) -> 'str'"
    ),
}

METHODS = {
    "__enter__": "(self) -> 'FakeAzureML'",
    "__exit__": (
        "(self, exc_type: 'type[BaseException] | None', exc: 'BaseException | None', "
        "tb: 'TracebackType | None') -> 'None'"
    ),
    "__iter__": "(self) -> 'Iterator[FakeRequest]'",
    "add_component": (
        "(self, name: 'str', version: 'str | int', *, "
        "inputs: 'Mapping[str, Mapping[str, Any]] | None' = None, "
        "outputs: 'Mapping[str, Mapping[str, Any]] | None' = None, registry: 'str' = 'azureml', "
        "component_type: 'str' = 'pipeline', display_name: 'str | None' = None, "
        "archived: 'bool' = False) -> 'dict[str, Any]'"
    ),
    "add_compute": (
        "(self, name: 'str', vm_size: 'str', *, state: 'str' = 'Succeeded', "
        "min_instances: 'int' = 0, max_instances: 'int' = 1, tier: 'str' = 'Dedicated', "
        "errors: 'list[dict[str, Any]] | None' = None) -> 'dict[str, Any]'"
    ),
    "add_model": (
        "(self, name: 'str', version: 'str | int', *, registry: 'str' = 'azureml', "
        "tags: 'Mapping[str, str] | None' = None, "
        "system_metadata: 'Mapping[str, Any] | None' = None, archived: 'bool' = False, "
        "labels: 'tuple[str, ...] | list[str] | None' = None, "
        "description: 'str | None' = None, properties: 'Mapping[str, str] | None' = None, "
        "model_type: 'str' = 'mlflow_model') -> 'dict[str, Any]'"
    ),
    "add_reference_model": (
        "(self, *, published_lifecycle: 'bool' = True, registry: 'str' = 'azureml') "
        "-> 'dict[str, Any]'"
    ),
    "add_completed_job": (
        "(self, name: 'str', *, outputs: 'tuple[str, ...]' = ('trained_model',)) -> 'None'"
    ),
    "add_registry": "(self, name: 'str') -> 'None'",
    "add_vm_size": (
        "(self, name: 'str', vcpus: 'int', gpus: 'int', family: 'str', "
        "memory_gb: 'float' = 0.0) -> 'None'"
    ),
    "billable": "(self) -> 'list[str]'",
    "clear_faults": "(self) -> 'None'",
    "clear_requests": "(self) -> 'None'",
    "credential": "(self) -> 'FakeCredential'",
    "endpoint_keys": "(self, endpoint_name: 'str') -> 'tuple[str, str]'",
    "find_requests": (
        "(self, method: 'str | None' = None, path_contains: 'str | None' = None, *, "
        "host_contains: 'str | None' = None, route: 'str | None' = None) "
        "-> 'list[FakeRequest]'"
    ),
    "inject_fault": (
        "(self, method: 'str | None', url_pattern: 'str', *, status: 'int | None' = None, "
        "times: 'int | None' = 1, retry_after: 'float | None' = None, "
        "connection_reset: 'bool' = False, body: 'Any' = None, code: 'str | None' = None, "
        "message: 'str | None' = None, quota: 'bool' = False, read_timeout: 'bool' = False) "
        "-> 'Fault'"
    ),
    "is_transient": "(status: 'int') -> 'bool'",
    "new_operation": (
        "(self, *, final: 'str' = 'Succeeded', error: 'dict[str, Any] | None' = None, "
        "on_done: 'Callable[[], None] | None' = None, polls: 'int | None' = None) "
        "-> 'tuple[str, str]'"
    ),
    "next_id": "(self) -> 'int'",
    "raw_header": "(self, name: 'str') -> 'str | None'",
    "registry_client": "(self, registry_name: 'str' = 'azureml', **kwargs: 'Any') -> 'MLClient'",
    "scoring_uri": "(self, endpoint_name: 'str') -> 'str'",
    "script_deployment": (
        "(self, outcome: \"Literal['Succeeded', 'Failed']\" = 'Succeeded', "
        "logs: 'list[str] | None' = None, *, error_message: 'str | None' = None, "
        "polls: 'int | None' = None, endpoint: 'str | None' = None, "
        "name: 'str | None' = None) -> 'None'"
    ),
    "script_job": (
        "(self, outcome: \"Literal['Completed', 'Failed', 'Canceled']\" = 'Completed', *, "
        "statuses: 'list[str] | None' = None, failing_step: 'str | None' = None, "
        "error_message: 'str | None' = None, logs: 'list[str] | None' = None, "
        "name: 'str | None' = None) -> 'None'"
    ),
    "secrets_issued": "(self) -> 'list[str]'",
    "set_scorer": (
        "(self, scorer: 'Scorer | None' = None, *, "
        "shape: \"Literal['output', 'list']\" = 'output') -> 'None'"
    ),
    "set_regional_quota": (
        "(self, limit: 'int', *, current: 'int | None' = None, "
        "low_priority_limit: 'int | None' = None) -> 'None'"
    ),
    "set_system_metadata_key": (
        "(self, key: \"Literal['system_metadata', 'systemMetadata']\") -> 'None'"
    ),
    "set_usage": (
        "(self, family: 'str', current: 'int', limit: 'int', *, "
        "naming: \"Literal['display', 'key'] | None\" = None) -> 'None'"
    ),
    "set_usage_naming": "(self, naming: \"Literal['display', 'key']\") -> 'None'",
    "start": "(self) -> 'None'",
    "stop": "(self) -> 'None'",
    "studio_url": "(self, job_name: 'str') -> 'str'",
    "workspace_client": "(self, **kwargs: 'Any') -> 'MLClient'",
    # realism (0.2.0)
    "clock": "(self) -> 'float'",
    "endpoint_name_reserved": "(self, name: 'str') -> 'bool'",
    "hold": "(self, method: 'str | None', url_pattern: 'str') -> 'Hold'",
    "inject_lost_reply": (
        "(self, method: 'str | None', url_pattern: 'str', *, times: 'int | None' = 1, "
        "kind: \"Literal['reset', 'timeout']\" = 'reset') -> 'Fault'"
    ),
    "release_endpoint_name": "(self, name: 'str') -> 'None'",
    "serve": "(self) -> 'FakeServer'",
    # serverless, models as a service (0.2.0)
    "add_maas_models": "(self, *, registry: 'str' = 'azureml') -> 'None'",
    "add_serverless_model": (
        "(self, name: 'str', version: 'str | int', *, deploy_regions: 'list[str] | None', "
        "registry: 'str' = 'azureml', publisher: 'str' = 'Microsoft', "
        "archived: 'bool' = False) -> 'dict[str, Any]'"
    ),
    "serverless_endpoint_keys": "(self, name: 'str') -> 'tuple[str, str]'",
    "set_workspace_kind": (
        "(self, kind: \"Literal['Default', 'Project', 'Hub']\", *, "
        "hub_name: 'str' = 'hub-phi-fake') -> 'None'"
    ),
}

READ_ONLY = {
    "active": bool,
    "api_host": str,
    "api_url": str,
    "blob_account_url": str,
    "discovery_url": str,
    "scorer": object,
    "workspace_id": str,
    "requests": list,
}

STATE_VIEWS = (
    "blobs",
    "computes",
    "data_assets",
    "deployments",
    "endpoints",
    "jobs",
    "marketplace_subscriptions",
    "models",
    "registry_components",
    "registry_models",
    "serverless_endpoints",
)

# attribute -> a value to write (users' tests assign some of these, e.g. ``fake.lro_polls``)
WRITABLE: dict[str, Any] = {
    "subscription_id": "00000000-0000-0000-0000-0000000000ff",
    "resource_group": "rg-other",
    "workspace_name": "ws-other",
    "location": "westus2",
    "registry_subscription_id": "00000000-0000-0000-0000-0000000000fe",
    "registry_resource_group": "registry-other",
    "storage_account": "otheraccount",
    "storage_container": "other-container",
    "lro_polls": 3,
    "retry_after_s": 2.5,
    "cancel_polls": 2,
    "page_size": 7,
    "name_reservation_s": 30.0,
    "check_job_outputs": True,
    "keys_issued": [],
    "scoring_calls": [],
    "sleeps": [],
    "unrouted": [],
    "check_tokens": False,
    "serverless_needs_hub": False,
}


def _public_names(cls: type) -> set[str]:
    names = set()
    for klass in cls.__mro__[:-1]:
        names |= {n for n in vars(klass) if not n.startswith("_")}
    return names


def test_package_exports_are_pinned() -> None:
    assert sorted(testing.__all__) == sorted(EXPORTS)
    for name, signature in EXPORTS.items():
        value = getattr(testing, name)
        if signature is not None:
            assert str(inspect.signature(value)) == signature, name


def test_fake_methods_keep_their_signatures() -> None:
    for name, signature in METHODS.items():
        member = inspect.getattr_static(FakeAzureML, name)
        if name == "is_transient":
            assert isinstance(member, staticmethod)
        assert callable(getattr(FakeAzureML, name)), name
        assert str(inspect.signature(getattr(FakeAzureML, name))) == signature, name


def test_fake_has_no_public_name_outside_the_pin() -> None:
    """A new public name is fine, but it must be added here (and to docs/testing.md)."""
    fake = FakeAzureML(seed=False)
    on_instance = {n for n in vars(fake) if not n.startswith("_")}
    known = set(METHODS) | set(READ_ONLY) | set(STATE_VIEWS) | set(WRITABLE)
    assert (_public_names(FakeAzureML) | on_instance) - known == set()
    assert {n for n in known if not n.startswith("_")} - (
        _public_names(FakeAzureML) | on_instance
    ) == set()


def test_read_only_properties_and_views() -> None:
    fake = FakeAzureML(seed=False)
    for name, kind in READ_ONLY.items():
        assert isinstance(getattr(fake, name), kind), name
    for name in STATE_VIEWS:
        view = getattr(fake, name)
        assert isinstance(view, Mapping), name
        with pytest.raises(TypeError):
            view["x"] = {}  # type: ignore[index]


def test_writable_attributes_round_trip() -> None:
    fake = FakeAzureML(seed=False)
    for name, value in WRITABLE.items():
        original = getattr(fake, name)
        assert type(original) is type(value), name
        setattr(fake, name, value)
        assert getattr(fake, name) == value, name


def test_identity_attributes_feed_the_urls() -> None:
    fake = FakeAzureML(seed=False, location="northeurope", workspace_name="ws-a")
    assert fake.api_url == "https://northeurope.api.azureml.ms/"
    fake.location = "westus2"
    fake.workspace_name = "ws-b"
    assert fake.api_host == "westus2.api.azureml.ms"
    assert fake.discovery_url == "https://westus2.api.azureml.ms/discovery"
    assert fake.workspace_id.endswith("/workspaces/ws-b")
    assert fake.scoring_uri("ep") == "https://ep.westus2.inference.ml.azure.com/score"
    fake.storage_account = "acct2"
    assert fake.blob_account_url == "https://acct2.blob.core.windows.net"


def test_state_views_follow_the_helpers() -> None:
    fake = FakeAzureML(seed=False)
    fake.add_compute("gpu", "Standard_NC6s_v3")
    fake.add_model("base", 2)
    fake.add_component("pipe", "1.0.0")
    assert set(fake.computes) == {"gpu"}
    assert set(fake.registry_models) == {("azureml", "base", "2")}
    assert set(fake.registry_components) == {("azureml", "pipe", "1.0.0")}
    assert fake.billable() == []
    assert fake.secrets_issued() == []
