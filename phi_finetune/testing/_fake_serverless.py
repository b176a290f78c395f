"""The serverless ("models as a service") knobs and views of ``FakeAzureML``: workspace kind,
models that support serverless fine-tuning, serverless endpoints and marketplace subscriptions.
Mixed into ``FakeAzureML``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from phi_finetune.testing._forward import Forward

if TYPE_CHECKING:
    from phi_finetune.testing._scope import FakeScope
    from phi_finetune.testing._store import FakeStore

__all__ = ["FakeServerlessKnobs"]


class FakeServerlessKnobs:
    """Mixin: every method here works on the state ``FakeAzureML`` sets up."""

    _store: FakeStore
    _scope: FakeScope
    add_model: Callable[..., dict[str, Any]]

    serverless_needs_hub = Forward[bool](
        "_store",
        "Refuse serverless fine-tuning and serverless endpoints outside a hub-based project "
        "(``set_workspace_kind('Project')``); true by default, as on Azure.",
    )

    def set_workspace_kind(
        self, kind: Literal["Default", "Project", "Hub"], *, hub_name: str = "hub-phi-fake"
    ) -> None:
        """Serve the workspace as ``kind``: ``Project`` is a hub-based project (its
        ``properties.hubResourceId`` names the hub ``hub_name`` in the same resource group),
        ``Default`` a plain workspace (the default), ``Hub`` a hub."""
        if kind not in ("Default", "Project", "Hub"):
            raise ValueError(f"kind={kind!r}: use 'Default', 'Project' or 'Hub'")
        scope = self._scope
        scope.workspace_kind = kind
        scope.hub_resource_id = (
            f"{scope.resource_group_id}/providers/Microsoft.MachineLearningServices"
            f"/workspaces/{hub_name}"
            if kind == "Project"
            else None
        )

    def add_serverless_model(
        self,
        name: str,
        version: str | int,
        *,
        deploy_regions: list[str] | None,
        registry: str = "azureml",
        publisher: str = "Microsoft",
        archived: bool = False,
    ) -> dict[str, Any]:
        """Add a registry model that serverless endpoints can serve; with ``deploy_regions``
        it supports serverless fine-tuning in those regions (the
        ``maas-finetuning-deploy-regions`` tag and ``system_metadata.maasFinetuning``)."""
        from phi_finetune.testing._maas_catalog import REGIONS_TAG

        tags = {"maas-inference": "true"}
        system_metadata: dict[str, Any] = {
            "deploymentOptions": ["ServerlessMaaS"],
            "publisher": publisher,
            "platformCapabilities": {"maasInference": True},
        }
        if deploy_regions is not None:
            tags[REGIONS_TAG] = str(list(deploy_regions))
            regions = {"maasFinetuningDeployRegions": list(deploy_regions)}
            system_metadata["maasFinetuning"] = regions
        return self.add_model(
            name,
            version,
            registry=registry,
            tags=tags,
            system_metadata=system_metadata,
            archived=archived,
        )

    def add_maas_models(self, *, registry: str = "azureml") -> None:
        """(Re)add the published models that support serverless fine-tuning
        (Phi-4-mini-instruct 1, Phi-3.5-mini-instruct 6; ``_maas_catalog``)."""
        from phi_finetune.testing._maas_catalog import maas_model_records

        for record in maas_model_records():
            meta = {k: record[k] for k in ("tags", "system_metadata", "archived")}
            self.add_model(record["name"], record["version"], registry=registry, **meta)

    @property
    def serverless_endpoints(self) -> Mapping[str, dict[str, Any]]:
        """Serverless endpoints by name (their REST bodies)."""
        return self._store.serverless.endpoints

    @property
    def marketplace_subscriptions(self) -> Mapping[str, dict[str, Any]]:
        """Marketplace subscriptions by name (their REST bodies)."""
        return self._store.serverless.subscriptions

    def serverless_endpoint_keys(self, name: str) -> tuple[str, str]:
        """``(primary, secondary)`` key of a serverless endpoint."""
        keys = self._store.serverless.keys(name)
        if keys is None:
            raise KeyError(name)
        return keys
