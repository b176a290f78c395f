"""pytest plugin (entry point ``phi_finetune``): the ``fake_azureml`` fixture.

Loaded automatically when phi_finetune is installed (``pytest11`` entry point); otherwise add
``pytest_plugins = ["phi_finetune.testing.pytest_plugin"]`` to your ``conftest.py``. Importing
this module is cheap: azure is imported only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from phi_finetune.testing import FakeAzureML

__all__ = ["fake_azureml"]


@pytest.fixture
def fake_azureml() -> Iterator[FakeAzureML]:
    """An active ``FakeAzureML`` (default seed data); unpatched again after the test."""
    from phi_finetune.testing import FakeAzureML

    with FakeAzureML() as fake:
        yield fake
