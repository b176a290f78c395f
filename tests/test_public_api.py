"""The public surface: ``phi_finetune.__all__`` is pinned, every name resolves, and the module
paths of 0.1.0 still import (with a DeprecationWarning) until 0.3.0."""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys

import pytest

import phi_finetune
from phi_finetune._moved import MOVED_MODULES

PUBLIC = [
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


def test_all_is_pinned() -> None:
    # Adding or removing a public name is an API change: update this list and CHANGELOG.md.
    assert sorted(phi_finetune.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(phi_finetune, name) is not None
    assert name in dir(phi_finetune)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = phi_finetune.Nope  # type: ignore[attr-defined]


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_moved_module_paths_still_import(old: str, new: str) -> None:
    # A fresh interpreter: in this one the old path may already be imported (no warning again).
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import phi_finetune\n"
        "try:\n"
        f"    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n"
        "    print('warned:', w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"warned: {old} moved to {new}" in out.stdout
    already = old in sys.modules
    with contextlib.nullcontext() if already else pytest.warns(DeprecationWarning):
        old_module = importlib.import_module(old)
    assert old_module is importlib.import_module(new)


def test_run_result_outputs_is_deprecated_but_works() -> None:
    from pathlib import Path

    from phi_finetune.steps import ModelRef

    result = phi_finetune.RunResult(
        run_id="r",
        backend="local",
        run_dir=Path("r"),
        model=ModelRef(name="m", version="2", uri="models:/m/2"),
    )
    with pytest.warns(DeprecationWarning, match=r"result\.to_dict\(\)"):
        outputs = result.outputs
    assert outputs == result.to_dict()
    assert outputs["register"]["version"] == "2"
