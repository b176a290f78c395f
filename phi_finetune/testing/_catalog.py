"""Default seed data: the chat-completion pipeline interface, Phi-4 and Phi-3, VM sizes, quotas.

Every fact here comes from a published source, named beside it with the date it was read; none
comes from the library (``tests/test_fake_contract.py`` checks that this module imports nothing
from ``phi_finetune``), so the fake cannot simply agree with the planner.

- Pipeline inputs: this project's own pinned description of the interface of
  ``chat_completion_pipeline`` 0.0.82 in the ``azureml`` registry (names, types, defaults, enums,
  bounds; descriptions left out). Source: Azure/azureml-assets
  ``assets/training/finetune_acft_hf_nlp/components/pipeline_components/chat_completion/spec.yaml``
  (read 2026-12-01).
- The model: Azure/azureml-assets ``assets/models/system/phi-3-mini-4k-instruct/spec.yaml``
  (read 2026-12-01): version 15, ``isArchived: true``, deprecation and retirement dates in system
  metadata, allow lists only in system metadata (``supportedComputes``), ``model_specific_defaults``
  in tags.
- The live default model: Azure/azureml-assets ``assets/models/system/Phi-4/spec.yaml`` at
  72891e1 (2026-07-01, read 2026-12-01): version 8, A100 and H100 allow lists, DeepSpeed stage 3.
- VM sizes and quotas: the ``VirtualMachineSize/list.json`` and ``Usage/list.json`` examples of
  Azure/azure-rest-api-specs ``specification/machinelearningservices/resource-manager/
  Microsoft.MachineLearningServices/preview/2023-08-01-preview/`` (read 2026-12-01; vendored in
  ``tests/data/contract/``) for the shapes and family-key spelling, and the Azure VM size pages
  on learn.microsoft.com (read 2026-12-01) for the GPU sizes, which the example does not list.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "CHAT_COMPLETION_COMPONENT",
    "CHAT_COMPLETION_VERSION",
    "DEFAULT_FAMILY_LIMIT",
    "DEFAULT_REGIONAL_DEDICATED_LIMIT",
    "DEFAULT_REGIONAL_LOW_PRIORITY_LIMIT",
    "DEFAULT_VM_SIZES",
    "PHI3_DEPRECATION",
    "PHI3_MODEL",
    "PHI4_MODEL",
    "chat_completion_inputs",
    "chat_completion_outputs",
    "phi4_model_record",
    "reference_model_record",
]

CHAT_COMPLETION_COMPONENT = "chat_completion_pipeline"
CHAT_COMPLETION_VERSION = "0.0.82"

_BOOL = ("true", "false")

# name -> (type, default, enum, min); every input is optional except task_name.
_INPUTS: dict[str, tuple[str, Any, tuple[str, ...] | None, int | None]] = {
    "instance_type_model_import": ("string", "Standard_d12_v2", None, None),
    "instance_type_preprocess": ("string", "Standard_d12_v2", None, None),
    "instance_type_finetune": ("string", "Standard_nc24rs_v3", None, None),
    "instance_type_model_evaluation": ("string", "Standard_nc24rs_v3", None, None),
    "shm_size_finetune": ("string", "5g", None, None),
    "num_nodes_finetune": ("integer", 1, None, 1),
    "number_of_gpu_to_use_finetuning": ("integer", 1, None, 1),
    "huggingface_id": ("string", None, None, None),
    "pytorch_model_path": ("custom_model", None, None, None),
    "mlflow_model_path": ("mlflow_model", None, None, None),
    "finetune_config_path": ("uri_file", None, None, None),
    "trust_remote_code": ("string", "false", _BOOL, None),
    "task_name": ("string", "ChatCompletion", ("ChatCompletion",), None),
    "batch_size": ("integer", 1000, None, 1),
    "pad_to_max_length": ("string", "false", _BOOL, None),
    "max_seq_length": ("integer", -1, None, None),
    "train_file_path": ("uri_file", None, None, None),
    "validation_file_path": ("uri_file", None, None, None),
    "test_file_path": ("uri_file", None, None, None),
    "train_mltable_path": ("mltable", None, None, None),
    "validation_mltable_path": ("mltable", None, None, None),
    "test_mltable_path": ("mltable", None, None, None),
    "apply_lora": ("string", "false", _BOOL, None),
    "merge_lora_weights": ("string", "true", _BOOL, None),
    "lora_alpha": ("integer", 128, None, None),
    "lora_r": ("integer", 8, None, None),
    "lora_dropout": ("number", 0.0, None, None),
    "num_train_epochs": ("integer", 1, None, 1),
    "max_steps": ("integer", -1, None, None),
    "per_device_train_batch_size": ("integer", 1, None, 1),
    "per_device_eval_batch_size": ("integer", 1, None, 1),
    "auto_find_batch_size": ("string", "false", _BOOL, None),
    "optim": ("string", "adamw_torch", ("adamw_torch", "adafactor"), None),
    "learning_rate": ("number", 2e-5, None, None),
    "warmup_steps": ("integer", 0, None, None),
    "weight_decay": ("number", 0.0, None, None),
    "adam_beta1": ("number", 0.9, None, None),
    "adam_beta2": ("number", 0.999, None, None),
    "adam_epsilon": ("number", 1e-8, None, None),
    "gradient_accumulation_steps": ("integer", 1, None, None),
    "eval_accumulation_steps": ("integer", -1, None, None),
    "lr_scheduler_type": (
        "string",
        "linear",
        (
            "linear",
            "cosine",
            "cosine_with_restarts",
            "polynomial",
            "constant",
            "constant_with_warmup",
        ),
        None,
    ),
    "precision": ("string", "32", ("32", "16"), None),
    "seed": ("integer", 42, None, None),
    "enable_full_determinism": ("string", "false", _BOOL, None),
    "dataloader_num_workers": ("integer", 0, None, None),
    "ignore_mismatched_sizes": ("string", "false", _BOOL, None),
    "max_grad_norm": ("number", 1.0, None, None),
    "evaluation_strategy": ("string", "epoch", ("epoch", "steps", "disable"), None),
    "evaluation_steps_interval": ("number", 0.0, None, None),
    "eval_steps": ("integer", 500, None, None),
    "logging_strategy": ("string", "steps", ("epoch", "steps"), None),
    "logging_steps": ("integer", 10, None, None),
    "metric_for_best_model": ("string", "loss", ("loss", "f1", "exact"), None),
    "resume_from_checkpoint": ("string", "false", _BOOL, None),
    "save_total_limit": ("integer", -1, None, None),
    "apply_early_stopping": ("string", "false", _BOOL, None),
    "early_stopping_patience": ("integer", 1, None, None),
    "early_stopping_threshold": ("number", 0.0, None, None),
    "apply_deepspeed": ("string", "false", _BOOL, None),
    "deepspeed": ("uri_file", None, None, None),
    "deepspeed_stage": ("string", "2", ("2", "3"), None),
    "apply_ort": ("string", "false", _BOOL, None),
    "evaluation_config": ("uri_file", None, None, None),
    "evaluation_config_params": ("string", None, None, None),
    "compute_model_import": ("string", "serverless", None, None),
    "compute_preprocess": ("string", "serverless", None, None),
    "compute_finetune": ("string", "serverless", None, None),
    "compute_model_evaluation": ("string", "serverless", None, None),
}

_OUTPUTS = {"pytorch_model_folder": "uri_folder", "mlflow_model_folder": "mlflow_model"}


def chat_completion_inputs() -> dict[str, dict[str, Any]]:
    """The inputs of ``chat_completion_pipeline`` as a component spec's ``inputs`` mapping."""
    inputs: dict[str, dict[str, Any]] = {}
    for name, (kind, default, enum, minimum) in _INPUTS.items():
        spec: dict[str, Any] = {"type": kind, "optional": name != "task_name"}
        if default is not None:
            spec["default"] = default
        if enum is not None:
            spec["enum"] = list(enum)
        if minimum is not None:
            spec["min"] = minimum
        inputs[name] = spec
    return inputs


def chat_completion_outputs() -> dict[str, dict[str, Any]]:
    return {name: {"type": kind} for name, kind in _OUTPUTS.items()}


# -------------------------------------------------------------------- Phi-3-mini-4k-instruct v15
# Source: Azure/azureml-assets assets/models/system/phi-3-mini-4k-instruct/spec.yaml, read
# 2026-12-01. The registry serves tags as strings; ``model_specific_defaults`` is the Python-literal
# string form the reference notebooks read with ``ast.literal_eval``.
PHI3_NAME = "Phi-3-mini-4k-instruct"
PHI3_VERSION = "15"
PHI3_ARCHIVED = True

_PHI3_DEFAULTS: dict[str, Any] = {
    "apply_deepspeed": "true",
    "deepspeed_stage": 2,
    "apply_lora": "true",
    "apply_ort": "false",
    "precision": 16,
    "ignore_mismatched_sizes": "false",
    "num_train_epochs": 1,
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5e-6,
    "learning_rate_min": 5e-7,
    "learning_rate_max": 5e-5,
    "lr_scheduler_type": "cosine",
    "logging_strategy": "steps",
    "logging_steps": 10,
    "save_total_limit": 1,
}

# system_metadata.supportedComputes, in the order the spec lists them
_FINETUNE_SKUS = [
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
]
_INFERENCE_SKUS = [
    "Standard_NC6s_v3",
    "Standard_NC12s_v3",
    "Standard_NC24s_v3",
    "Standard_ND40rs_v2",
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NC96ads_A100_v4",
]

PHI3_DEPRECATION: dict[str, str] = {
    "finetuneDeprecationDate": "2025-06-30T00:00:00.000000Z",
    "finetuneRetirementDate": "2025-08-30T00:00:00.000000Z",
    "inferenceDeprecationDate": "2025-06-30T00:00:00.000000Z",
    "inferenceLegacyDate": "2025-06-09T00:00:00.000000Z",
    "inferenceRetirementDate": "2025-08-30T00:00:00.000000Z",
}
"""``system_metadata.deprecation`` of version 15: every date has passed."""

PHI3_MODEL: dict[str, Any] = {
    "name": PHI3_NAME,
    "version": PHI3_VERSION,
    "archived": PHI3_ARCHIVED,
    "tags": {
        "_aml_system_vanity_registry": "azureml-phi",
        "model_specific_defaults": str(_PHI3_DEFAULTS),
    },
    "system_metadata": {
        "deploymentOptions": ["UnifiedEndpointMaaS", "MaaP", "ServerlessMaaS"],
        "languages": ["en"],
        "sharedComputeCapacityEnabled": True,
        "tasks": {"fineTuningTasks": ["chat-completion"], "inferenceTasks": ["chat-completion"]},
        "SKU": {
            "inferenceRecommendedSkus": [*_INFERENCE_SKUS[:4], *_FINETUNE_SKUS],
            "finetuneRecommendedSkus": list(_FINETUNE_SKUS),
            "inferenceMinSkuSpec": "6|1|112|64",
            "finetuneMinSkuSpec": "24|1|220|64",
        },
        "publisher": "Microsoft",
        "displayName": "Phi-3-mini instruct (4k)",
        "license": "MIT",
        "maxOutputTokens": 4096,
        "textContextWindow": 4096,
        "inputModalities": ["text"],
        "outputModalities": ["text"],
        "supportedComputes": {
            "inferenceComputes": list(_INFERENCE_SKUS),
            "finetuneComputes": list(_FINETUNE_SKUS),
        },
        "deprecation": dict(PHI3_DEPRECATION),
        "inferenceSupportedEnvs": ["vllm"],
    },
}
"""Version 15 as the ``azureml`` registry publishes it (archived, retired, allow lists only in
system metadata)."""


PHI4_NAME = "Phi-4"
PHI4_VERSION = "8"
# Azure/azureml-assets assets/models/system/Phi-4/spec.yaml at 72891e1 (2026-07-01; read
# 2026-12-01): live (no isArchived, no deprecation block), DeepSpeed stage 3 + LoRA defaults.
_PHI4_FINETUNE_SKUS = [
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96isr_H100_v5",
]
_PHI4_INFERENCE_SKUS = [
    *_PHI4_FINETUNE_SKUS[:5],
    "Standard_ND96isr_H100_v5",
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
]
_PHI4_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in _PHI3_DEFAULTS.items() if not k.startswith("learning_rate_")},
    "deepspeed_stage": 3,
}

PHI4_MODEL: dict[str, Any] = {
    "name": PHI4_NAME,
    "version": PHI4_VERSION,
    "archived": False,
    "tags": {"model_specific_defaults": str(_PHI4_DEFAULTS)},
    "system_metadata": {
        "deploymentOptions": ["UnifiedEndpointMaaS", "MaaP", "ServerlessMaaS"],
        "sharedComputeCapacityEnabled": True,
        "tasks": {"fineTuningTasks": ["chat-completion"], "inferenceTasks": ["chat-completion"]},
        "SKU": {
            "inferenceRecommendedSkus": list(_PHI4_INFERENCE_SKUS),
            "finetuneRecommendedSkus": list(_PHI4_FINETUNE_SKUS),
            "inferenceMinSkuSpec": "24|1|220|64",
            "finetuneMinSkuSpec": "24|1|220|64",
        },
        "publisher": "Microsoft",
        "displayName": "Phi-4",
        "license": "MIT",
        "maxOutputTokens": 16384,
        "textContextWindow": 16384,
        "inputModalities": ["text"],
        "outputModalities": ["text"],
        "supportedComputes": {
            "inferenceComputes": list(_PHI4_INFERENCE_SKUS),
            "finetuneComputes": list(_PHI4_FINETUNE_SKUS),
        },
        "inferenceSupportedEnvs": ["vllm"],
    },
}
"""Phi-4 version 8 as the ``azureml`` registry publishes it: the fake's live default model."""


def phi4_model_record() -> dict[str, Any]:
    """A deep copy of ``PHI4_MODEL``."""
    return copy.deepcopy(PHI4_MODEL)


def reference_model_record(*, published_lifecycle: bool = True) -> dict[str, Any]:
    """A deep copy of ``PHI3_MODEL``; without ``published_lifecycle`` it is unarchived and has no
    ``deprecation`` block (the fake's default seed, so flows not about lifecycle can run)."""
    record = copy.deepcopy(PHI3_MODEL)
    if not published_lifecycle:
        record["archived"] = False
        del record["system_metadata"]["deprecation"]
    return record


# -------------------------------------------------------------------- VM sizes
# name -> (vCPUs, GPUs, family key, memory GB). Family keys use the vmSizes list's spelling
# (``standardDSv2Family`` in VirtualMachineSize/list.json). Standard_DS3_v2: that example.
# GPU sizes: learn.microsoft.com/azure/virtual-machines/sizes/gpu-accelerated/ncv3-series,
# nca100v4-series, ndasra100v4-series, ndma100v4-series, ncadsh100v5-series, ndh100v5-series
# and ncast4v3-series (read 2026-12-01; the same facts as phi_finetune.azure.vm_sizes). The
# retired NCv3 sizes stay: a region's size list can still name them.
DEFAULT_VM_SIZES: dict[str, tuple[int, int, str, float]] = {
    "Standard_DS3_v2": (4, 0, "standardDSv2Family", 14.0),
    "Standard_NC6s_v3": (6, 1, "standardNCSv3Family", 112.0),
    "Standard_NC12s_v3": (12, 2, "standardNCSv3Family", 224.0),
    "Standard_NC24s_v3": (24, 4, "standardNCSv3Family", 448.0),
    "Standard_NC24ads_A100_v4": (24, 1, "standardNCADSA100v4Family", 220.0),
    "Standard_NC48ads_A100_v4": (48, 2, "standardNCADSA100v4Family", 440.0),
    "Standard_NC96ads_A100_v4": (96, 4, "standardNCADSA100v4Family", 880.0),
    "Standard_ND96asr_v4": (96, 8, "standardNDASv4_A100Family", 900.0),
    "Standard_ND96amsr_A100_v4": (96, 8, "standardNDAMSv4_A100Family", 1900.0),
    "Standard_NC40ads_H100_v5": (40, 1, "standardNCadsH100v5Family", 320.0),
    "Standard_NC80adis_H100_v5": (80, 2, "standardNCadsH100v5Family", 640.0),
    "Standard_ND96isr_H100_v5": (96, 8, "standardNDSH100v5Family", 1900.0),
    "Standard_NC4as_T4_v3": (4, 1, "standardNCASv3_T4Family", 28.0),
    "Standard_NC8as_T4_v3": (8, 1, "standardNCASv3_T4Family", 56.0),
    "Standard_NC16as_T4_v3": (16, 1, "standardNCASv3_T4Family", 110.0),
    "Standard_NC64as_T4_v3": (64, 4, "standardNCASv3_T4Family", 440.0),
}

# -------------------------------------------------------------------- quotas
# Shapes from Usage/list.json (2023-08-01-preview): a regional dedicated total, one entry per
# family (plus per-workspace duplicates), a low-priority regional total, family low-priority
# limits of -1. The limits are this fake's generous defaults, not published figures.
DEFAULT_FAMILY_LIMIT = 200
DEFAULT_REGIONAL_DEDICATED_LIMIT = 1000
DEFAULT_REGIONAL_LOW_PRIORITY_LIMIT = 1000
