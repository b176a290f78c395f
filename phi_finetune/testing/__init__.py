"""Public test doubles for code that uses Azure ML: ``FakeAzureML`` and ``autospec_ml_client()``.

``FakeAzureML`` is a stateful, in-process fake of the Azure ML REST surface that the real
``azure-ai-ml`` talks to; ``autospec_ml_client()`` is a signature-checked ``MLClient`` mock.
Names are imported lazily, so importing this package (or its pytest plugin) stays cheap;
``import phi_finetune`` never imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phi_finetune.testing._autospec import autospec_ml_client
    from phi_finetune.testing._fake_service import FakeAzureML
    from phi_finetune.testing._http import FakeRequest, Reply
    from phi_finetune.testing._scoring import Scorer, echo_scorer
    from phi_finetune.testing._state import Fault, JobState
    from phi_finetune.testing._tokens import FakeCredential, make_jwt

__all__ = [
    "FakeAzureML",
    "FakeCredential",
    "FakeRequest",
    "Fault",
    "JobState",
    "Reply",
    "Scorer",
    "autospec_ml_client",
    "echo_scorer",
    "make_jwt",
]

_WHERE = {
    "FakeAzureML": "_fake_service",
    "FakeCredential": "_tokens",
    "FakeRequest": "_http",
    "Fault": "_state",
    "JobState": "_state",
    "Reply": "_http",
    "Scorer": "_scoring",
    "autospec_ml_client": "_autospec",
    "echo_scorer": "_scoring",
    "make_jwt": "_tokens",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'phi_finetune.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"phi_finetune.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
