"""Seed data for serverless ("models as a service") fine-tuning, from published sources only.

- Which models support serverless fine-tuning, and where: the tag the azureml-examples notebook
  ``sdk/python/jobs/finetuning/standalone/model-as-a-service/chat-completion/
  chat_completion_with_model_as_service.ipynb`` reads, ``model.tags["maas-finetuning-deploy-
  regions"]`` (Azure/azureml-examples at 085cd6e, notebook last changed 61cd993, read
  2026-12-01), and the notebook's "Current support matrix for FT deployments" table for the
  regions of ``Phi-4-mini-instruct``. Version 1 of that model: the ``parents`` of
  ``assets/models/foundrylocal/phi-4-mini-instruct-cuda-gpu/spec.yaml`` (Azure/azureml-assets at
  4b41f8c).
- ``Phi-3.5-mini-instruct`` 6: Azure/azureml-assets
  ``assets/models/system/phi-3.5-mini-128k-instruct/spec.yaml`` at 4b41f8c (2026-07-23): archived,
  retirement dates passed, regions under ``system_metadata.maasFinetuning.
  maasFinetuningDeployRegions``; before the system-metadata migration (4d1df54) the same list
  was the ``maas-finetuning-deploy-regions`` tag. The fake serves both spellings.
- Tag values: the registry serves tags as strings; a list tag is served in its Python-literal
  string form (as ``model_specific_defaults`` in ``_catalog``), so both
  ``region in tags[...]`` (the notebook) and ``ast.literal_eval`` read it.

The vendored copies are in ``tests/data/contract/azureml-assets/`` and
``tests/data/contract/azureml-examples/``; ``tests/test_fake_serverless_seed.py`` checks this
module against them. Nothing here comes from the library.
"""

from __future__ import annotations

import ast
import copy
from typing import Any

__all__ = [
    "MAAS_MODELS",
    "REGIONS_TAG",
    "deploy_regions",
    "maas_model_records",
    "publisher",
]

REGIONS_TAG = "maas-finetuning-deploy-regions"
"""The registry model tag listing the regions a serverless fine-tuned model deploys in."""

_PHI4_MINI_REGIONS = ["eastus2", "eastus", "northcentralus", "westus3", "westus", "southcentralus"]
_PHI35_MINI_REGIONS = [
    "eastus2",
    "eastus",
    "northcentralus",
    "westus3",
    "westus",
    "southcentralus",
]

MAAS_MODELS: list[dict[str, Any]] = [
    {
        "name": "Phi-4-mini-instruct",
        "version": "1",
        "archived": False,
        "tags": {REGIONS_TAG: str(_PHI4_MINI_REGIONS), "maas-inference": "true"},
        "system_metadata": {
            "deploymentOptions": ["UnifiedEndpointMaaS", "MaaP", "ServerlessMaaS"],
            "publisher": "Microsoft",
            "tasks": {
                "fineTuningTasks": ["chat-completion"],
                "inferenceTasks": ["chat-completion"],
            },
            "platformCapabilities": {"maasInference": True},
            "maasFinetuning": {"maasFinetuningDeployRegions": list(_PHI4_MINI_REGIONS)},
        },
    },
    {
        "name": "Phi-3.5-mini-instruct",
        "version": "6",
        "archived": True,
        "tags": {
            "_aml_system_vanity_registry": "azureml-phi",
            REGIONS_TAG: str(_PHI35_MINI_REGIONS),
            "maas-inference": "true",
        },
        "system_metadata": {
            "deploymentOptions": ["UnifiedEndpointMaaS", "MaaP", "ServerlessMaaS"],
            "publisher": "Microsoft",
            "displayName": "Phi-3.5-mini instruct (128k)",
            "tasks": {
                "fineTuningTasks": ["chat-completion"],
                "inferenceTasks": ["chat-completion"],
            },
            "deprecation": {
                "finetuneDeprecationDate": "2025-06-30T00:00:00.000000Z",
                "finetuneRetirementDate": "2025-08-30T00:00:00.000000Z",
                "inferenceDeprecationDate": "2025-06-30T00:00:00.000000Z",
                "inferenceLegacyDate": "2025-06-09T00:00:00.000000Z",
                "inferenceRetirementDate": "2025-08-30T00:00:00.000000Z",
            },
            "platformCapabilities": {"enableBatch": False, "maasInference": True},
            "maasFinetuning": {"maasFinetuningDeployRegions": list(_PHI35_MINI_REGIONS)},
        },
    },
]
"""Registry models (``azureml``) seeded for the serverless route, as published."""


def maas_model_records() -> list[dict[str, Any]]:
    """Deep copies of ``MAAS_MODELS``."""
    return copy.deepcopy(MAAS_MODELS)


def _system_metadata(body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties") or {}
    found = props.get("system_metadata") or props.get("systemMetadata") or {}
    return found if isinstance(found, dict) else {}


def deploy_regions(body: dict[str, Any]) -> list[str] | None:
    """The serverless fine-tuning regions a registry model version lists (tag or system
    metadata); ``None`` when it lists none (the model does not support the route)."""
    maas = _system_metadata(body).get("maasFinetuning")
    if isinstance(maas, dict) and isinstance(maas.get("maasFinetuningDeployRegions"), list):
        return [str(r) for r in maas["maasFinetuningDeployRegions"]]
    tag = ((body.get("properties") or {}).get("tags") or {}).get(REGIONS_TAG)
    if not isinstance(tag, str) or not tag.strip():
        return None
    try:
        parsed = ast.literal_eval(tag)
    except (ValueError, SyntaxError):
        parsed = tag.split(",")
    if isinstance(parsed, str):
        parsed = parsed.split(",")
    return [str(r).strip() for r in parsed if str(r).strip()]


def publisher(body: dict[str, Any]) -> str | None:
    """The publisher a registry model version names in its system metadata."""
    value = _system_metadata(body).get("publisher")
    return str(value) if value else None
