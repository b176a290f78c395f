"""Who the fake service is: subscription, workspace, registry scope, storage, and its URLs."""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["FakeScope", "SystemMetadataKey", "UsageNaming"]

UsageNaming = Literal["display", "key"]
"""How usages are named: ``"Standard NCADSA100v4 Family Cluster Dedicated vCPUs"`` (``display``,
as in the specification's example) or the vmSizes family key ``standardNCADSA100v4Family``."""

SystemMetadataKey = Literal["system_metadata", "systemMetadata"]
"""The wire key of a registry model version's system metadata under ``properties``."""


@attrs.define
class FakeScope:
    """The fake's identity; every URL and ARM id the routes answer with is built from it.

    Mutable on purpose: ``FakeAzureML``'s identity attributes write through to it, so a test
    that changes ``fake.location`` changes what the routes answer.
    """

    subscription_id: str
    resource_group: str
    workspace_name: str
    location: str
    registry_subscription_id: str
    registry_resource_group: str
    storage_account: str = "fakestorageacct"
    storage_container: str = "azureml-blobstore-fake"
    usage_naming: UsageNaming = "display"
    """The naming form of usages added without an explicit one (``set_usage``)."""
    system_metadata_key: SystemMetadataKey = "system_metadata"
    """The key registry model versions carry their system metadata under (see docs/testing.md)."""
    workspace_kind: str = "Default"
    """The workspace's ``kind``: ``Default`` (a plain workspace) or ``Project`` (hub-based)."""
    hub_resource_id: str | None = None
    """``properties.hubResourceId`` of a hub-based project (``None`` for a plain workspace)."""

    @property
    def api_host(self) -> str:
        return f"{self.location}.api.azureml.ms"

    @property
    def api_url(self) -> str:
        """Data-plane root (``https://<location>.api.azureml.ms/``)."""
        return f"https://{self.api_host}/"

    @property
    def discovery_url(self) -> str:
        return f"{self.api_url}discovery"

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"

    @property
    def workspace_id(self) -> str:
        return (
            f"{self.resource_group_id}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )

    @property
    def tracking_uri(self) -> str:
        """The workspace's MLflow tracking URI (``azureml://...``)."""
        return f"azureml://{self.api_host}/mlflow/v1.0{self.workspace_id}"

    @property
    def blob_account_url(self) -> str:
        return f"https://{self.storage_account}.blob.core.windows.net"

    def arm_id(self, suffix: str) -> str:
        """The ARM id of a workspace resource (``suffix`` like ``/computes/gpu``)."""
        return f"{self.workspace_id}{suffix}"

    def location_id(self, suffix: str) -> str:
        """A subscription + location scoped ARM id (usages, operation status)."""
        return (
            f"/subscriptions/{self.subscription_id}/providers/"
            f"Microsoft.MachineLearningServices/locations/{self.location}{suffix}"
        )

    def scoring_uri(self, endpoint_name: str) -> str:
        return f"https://{endpoint_name}.{self.location}.inference.ml.azure.com/score"

    def studio_url(self, job_name: str) -> str:
        # azure-ai-ml appends "&tid=<tenant>" itself, as it does to the real service's URL
        return f"https://ml.azure.com/runs/{job_name}?wsid={self.workspace_id}"
