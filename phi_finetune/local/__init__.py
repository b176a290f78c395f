"""The local backend: the same workflow on one machine, no cloud.

Submodules (each imports torch / transformers / mlflow / fastapi only when called):

- :mod:`~phi_finetune.local.tiny_model`: a tiny Phi-3-architecture **test** model built offline.
- :mod:`~phi_finetune.local.training`: LoRA fine-tuning of any causal LM (:class:`LocalTrainer`),
  with its steps in :mod:`~phi_finetune.local.parameters` (Azure-named parameters, what is
  ignored on local), :mod:`~phi_finetune.local.examples` (conversations, masks, batches),
  :mod:`~phi_finetune.local.model_loading` (model, tokenizer, LoRA, device and dtype),
  :mod:`~phi_finetune.local.tracking` (MLflow) and :mod:`~phi_finetune.local.results`.
- :mod:`~phi_finetune.local.registry`: MLflow sqlite registry, pyfunc model and :func:`generate`.
- :mod:`~phi_finetune.local.server`: the HTTP endpoint speaking the Azure scoring contract
  (:class:`LocalServer` starts it as a subprocess); :mod:`~phi_finetune.local.standby` starts
  that process ahead, while the model trains (:class:`ServerStandby`).

This package is cheap to import: names below are resolved lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phi_finetune.local.parameters import IgnoredParameter
    from phi_finetune.local.registry import LocalRegistry, RegisteredModel, generate
    from phi_finetune.local.results import StepMetrics, TrainingResult
    from phi_finetune.local.server import LocalServer
    from phi_finetune.local.standby import ServerStandby
    from phi_finetune.local.tiny_model import build_tiny_model
    from phi_finetune.local.training import LocalTrainer, train_lora

__all__ = [
    "IgnoredParameter",
    "LocalRegistry",
    "LocalServer",
    "LocalTrainer",
    "RegisteredModel",
    "ServerStandby",
    "StepMetrics",
    "TrainingResult",
    "build_tiny_model",
    "generate",
    "train_lora",
]

_WHERE = {
    "build_tiny_model": "tiny_model",
    "IgnoredParameter": "parameters",
    "LocalTrainer": "training",
    "StepMetrics": "results",
    "TrainingResult": "results",
    "train_lora": "training",
    "LocalRegistry": "registry",
    "RegisteredModel": "registry",
    "generate": "registry",
    "LocalServer": "server",
    "ServerStandby": "standby",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'phi_finetune.local' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"phi_finetune.local.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
