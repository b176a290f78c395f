"""The serverless ("models as a service") backend: fine-tune and deploy without GPU quota.

- :mod:`~phi_finetune.serverless.backend`: :class:`ServerlessBackend`, the steps.
- :mod:`~phi_finetune.serverless.plan`: the checks (model, region, hub project,
  hyperparameters, data) and the plan record.
- :mod:`~phi_finetune.serverless.job`: the ``create_finetuning_job`` job.
- :mod:`~phi_finetune.serverless.endpoint`: serverless endpoints, keys, marketplace
  subscriptions, and :class:`ServerlessEndpointHandle` for scoring.
- :mod:`~phi_finetune.serverless.facts`: pinned per-model facts with their sources.
- :mod:`~phi_finetune.serverless.errors`: one error class per plan check.

Nothing here imports azure-ai-ml at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phi_finetune.serverless.backend import ServerlessBackend
    from phi_finetune.serverless.endpoint import ServerlessEndpointHandle

__all__ = ["ServerlessBackend", "ServerlessEndpointHandle"]


def __getattr__(name: str) -> Any:
    if name == "ServerlessBackend":
        from phi_finetune.serverless.backend import ServerlessBackend

        return ServerlessBackend
    if name == "ServerlessEndpointHandle":
        from phi_finetune.serverless.endpoint import ServerlessEndpointHandle

        return ServerlessEndpointHandle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
