"""Module paths of 0.1.0 that moved in 0.2.0 keep importing, with a DeprecationWarning, until 0.3.0.

``import phi_finetune.workspace`` gives the very module ``phi_finetune.azure.workspace`` (same
object, so ``mock.patch("phi_finetune.workspace.X")`` still patches the code that runs).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["MOVED_MODULES", "install"]

#: 0.1.0 module path -> where it lives now.
MOVED_MODULES: dict[str, str] = {
    "phi_finetune.azure_backend": "phi_finetune.azure.backend",
    "phi_finetune.workspace": "phi_finetune.azure.workspace",
    "phi_finetune.compute": "phi_finetune.azure.compute",
    "phi_finetune.foundation_model": "phi_finetune.azure.foundation_model",
    "phi_finetune.job": "phi_finetune.azure.job",
    "phi_finetune.registrar": "phi_finetune.azure.registrar",
    "phi_finetune.deployer": "phi_finetune.azure.deployer",
    "phi_finetune.data.assets": "phi_finetune.azure.data_assets",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; the old path stops working in 0.3.0",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # The target module is already executed; importlib then stores it under the old name.
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


_FINDER = _MovedFinder()


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (done by ``import phi_finetune``)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
