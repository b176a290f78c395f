"""phi_finetune: fine-tune, register, deploy, score and delete chat models on Azure ML.

The same workflow runs offline on one machine with the local backend. Names are loaded on first
use, so ``import phi_finetune`` stays cheap (no azure.ai.ml, mlflow, datasets or torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from phi_finetune import _moved
from phi_finetune._sdk_notices import quiet_internal_schema_notices
from phi_finetune._version import __version__

# Every use of azure-ai-ml goes through this package; installing the filter here covers them all.
quiet_internal_schema_notices()
# 0.1.0's module paths (phi_finetune.workspace, ...) keep importing for one release.
_moved.install()

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "WorkspaceConfig": "phi_finetune.config",
    "RunConfig": "phi_finetune.config",
    "load_run_config": "phi_finetune.config",
    "Workspace": "phi_finetune.azure.workspace",
    "UltraChatDataset": "phi_finetune.data",
    "FoundationModel": "phi_finetune.azure.foundation_model",
    "ComputeSelector": "phi_finetune.azure.compute",
    "FineTuneParameters": "phi_finetune.parameters",
    "FineTuneJob": "phi_finetune.azure.job",
    "ModelRegistrar": "phi_finetune.azure.registrar",
    "EndpointDeployer": "phi_finetune.azure.deployer",
    "Endpoint": "phi_finetune.endpoint",
    "FineTuneSession": "phi_finetune.session",
    "RunResult": "phi_finetune.session",
    "ModelRef": "phi_finetune.steps",
    "JobHandle": "phi_finetune.azure.job",
    "DeploymentSpec": "phi_finetune.azure.deployment_spec",
    "build_request": "phi_finetune.scoring",
    "parse_response": "phi_finetune.scoring",
    "ScoreResult": "phi_finetune.scoring",
    "PhiFinetuneError": "phi_finetune.errors",
}

__all__ = [
    "ComputeSelector",
    "DeploymentSpec",
    "Endpoint",
    "EndpointDeployer",
    "FineTuneJob",
    "FineTuneParameters",
    "FineTuneSession",
    "FoundationModel",
    "JobHandle",
    "ModelRef",
    "ModelRegistrar",
    "PhiFinetuneError",
    "RunConfig",
    "RunResult",
    "ScoreResult",
    "UltraChatDataset",
    "Workspace",
    "WorkspaceConfig",
    "__version__",
    "build_request",
    "load_run_config",
    "parse_response",
]

if TYPE_CHECKING:
    from phi_finetune.azure.compute import ComputeSelector
    from phi_finetune.azure.deployer import EndpointDeployer
    from phi_finetune.azure.deployment_spec import DeploymentSpec
    from phi_finetune.azure.foundation_model import FoundationModel
    from phi_finetune.azure.job import FineTuneJob, JobHandle
    from phi_finetune.azure.registrar import ModelRegistrar
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.config import RunConfig, WorkspaceConfig, load_run_config
    from phi_finetune.data import UltraChatDataset
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.errors import PhiFinetuneError
    from phi_finetune.parameters import FineTuneParameters
    from phi_finetune.scoring import ScoreResult, build_request, parse_response
    from phi_finetune.session import FineTuneSession, RunResult
    from phi_finetune.steps import ModelRef


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'phi_finetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
