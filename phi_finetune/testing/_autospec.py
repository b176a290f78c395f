"""``autospec_ml_client()``: a signature-checked ``MLClient`` mock for pure unit tests."""

from __future__ import annotations

from typing import Any
from unittest import mock

__all__ = ["OPERATION_CLASSES", "autospec_ml_client"]

OPERATION_CLASSES: dict[str, str] = {
    "models": "ModelOperations",
    "components": "ComponentOperations",
    "compute": "ComputeOperations",
    "jobs": "JobOperations",
    "online_endpoints": "OnlineEndpointOperations",
    "online_deployments": "OnlineDeploymentOperations",
    "data": "DataOperations",
    "workspaces": "WorkspaceOperations",
    "datastores": "DatastoreOperations",
    "environments": "EnvironmentOperations",
    "registries": "RegistryOperations",
}
"""``MLClient`` property -> the ``azure.ai.ml.operations`` class it returns."""


def autospec_ml_client(
    *,
    subscription_id: str = "00000000-0000-0000-0000-000000000001",
    resource_group_name: str = "rg-phi-fake",
    workspace_name: str | None = "ws-phi-fake",
) -> Any:
    """A ``create_autospec(MLClient, instance=True)`` whose operations are specced too.

    ``create_autospec`` alone leaves ``ml.models`` & co unspecced (they are properties); here
    each one is ``create_autospec(<real operations class>, instance=True)``, so a call with a
    wrong keyword or a missing argument fails like it would against the real SDK.
    """
    import azure.ai.ml.operations as ops
    from azure.ai.ml import MLClient

    client = mock.create_autospec(MLClient, instance=True)
    for prop, class_name in OPERATION_CLASSES.items():
        spec = getattr(ops, class_name)
        setattr(client, prop, mock.create_autospec(spec, instance=True))
    client.subscription_id = subscription_id
    client.resource_group_name = resource_group_name
    client.workspace_name = workspace_name
    return client
