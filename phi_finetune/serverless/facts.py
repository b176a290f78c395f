"""Pinned serverless facts per model, each with its public source.

Offline plans read these; a live plan reads the model's tags instead (the registry's
``maas-finetuning-deploy-regions`` tag, as the azureml-examples notebook does). The pinned
catalogue (:mod:`phi_finetune.azure.model_catalog`) stays the source of each model's other facts
(``deployment_options`` naming ``ServerlessMaaS``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = [
    "ACCEPTED_HYPERPARAMETERS",
    "HYPERPARAMETER_SOURCE",
    "IDLE_DELETE_DAYS",
    "REGIONS_TAG",
    "ServerlessFacts",
    "serverless_facts",
]

#: The model tag listing the regions where a fine-tuned serverless deployment is supported.
REGIONS_TAG = "maas-finetuning-deploy-regions"
#: Azure deletes a fine-tuned serverless deployment that has had no calls for this many days.
IDLE_DELETE_DAYS = 15

_NOTEBOOK = {
    "repo": "Azure/azureml-examples",
    "path": "sdk/python/jobs/finetuning/standalone/model-as-a-service/chat-completion/"
    "chat_completion_with_model_as_service.ipynb",
    "commit": "085cd6ea399038c1e07843acff811f34261c0887",
    "what": "'Current support matrix for FT deployments' table",
}

#: The hyperparameters the serverless route accepts, with their kind and the spec's default.
ACCEPTED_HYPERPARAMETERS: Mapping[str, tuple[str, int | float]] = {
    "max_seq_length": ("integer", 8192),
    "num_train_epochs": ("integer", 1),
    "per_device_train_batch_size": ("integer", 1),
    "learning_rate": ("number", 3e-4),
}
HYPERPARAMETER_SOURCE = {
    "repo": "Azure/azureml-assets",
    "path": "assets/training/finetune_acft_hf_nlp/components_v2/pipeline_components/"
    "chat_completion/spec.yaml",
    "commit": "4b41f8ccbc01cf492767adc586ce1661c54c340a",
    "what": "oss_chat_completion_pipeline 0.0.29 inputs",
}

_ALL = ("eastus2", "eastus", "northcentralus", "westus3", "westus", "southcentralus")
_EASTUS2 = ("eastus2",)
_WESTUS3 = ("westus3",)


@attrs.frozen
class ServerlessFacts:
    """Where a model's fine-tuned serverless deployment is supported, and whether it needs a
    marketplace subscription (third-party models do)."""

    name: str
    regions: tuple[str, ...]
    publisher: str
    source: Mapping[str, str] = attrs.field(factory=lambda: dict(_NOTEBOOK))

    @property
    def needs_marketplace_subscription(self) -> bool:
        return self.publisher != "Microsoft"


# Publisher: the notebook skips the subscription for Microsoft (1P) models ("Phi family").
_PINNED = tuple(
    ServerlessFacts(name, regions, publisher)
    for name, regions, publisher in (
        ("Mistral-3B", _ALL, "Mistral AI"),
        ("Mistral-Nemo", _ALL, "Mistral AI"),
        ("Mistral-Large-2411", _ALL, "Mistral AI"),
        ("tsuzumi-7b", _ALL, "NTT DATA"),
        ("Phi-4-mini-instruct", _ALL, "Microsoft"),
        ("Phi-3.5-mini-instruct", _ALL, "Microsoft"),
        ("Phi-3.5-MoE-instruct", _ALL, "Microsoft"),
        ("Phi-3-mini-4k-instruct", _EASTUS2, "Microsoft"),
        ("Phi-3-mini-128k-instruct", _EASTUS2, "Microsoft"),
        ("Phi-3-medium-4k-instruct", _EASTUS2, "Microsoft"),
        ("Phi-3-medium-128k-instruct", ("eastus2", "swedencentral"), "Microsoft"),
        ("Llama-3.1-8b-instruct", _WESTUS3, "Meta"),
        ("Llama-3.1-70b-instruct", _WESTUS3, "Meta"),
        ("Llama-2-7b", _WESTUS3, "Meta"),
        ("Llama-2-13b", _WESTUS3, "Meta"),
        ("Llama-2-70b", _WESTUS3, "Meta"),
    )
)


def serverless_facts(name: str) -> ServerlessFacts | None:
    """The pinned facts of model ``name`` (case-insensitive), ``None`` when not pinned."""
    wanted = name.lower()
    return next((f for f in _PINNED if f.name.lower() == wanted), None)


def pinned_models() -> tuple[str, ...]:
    """Names of the models with pinned serverless facts."""
    return tuple(f.name for f in _PINNED)
