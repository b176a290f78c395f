"""pytest plugin (entry point ``phi_finetune``): the ``fake_azureml`` and ``fake_azureml_server``
fixtures.

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
    from phi_finetune.testing._server import FakeServer

__all__ = ["fake_azureml", "fake_azureml_server"]


@pytest.fixture
def fake_azureml() -> Iterator[FakeAzureML]:
    """An active ``FakeAzureML`` (default seed data); unpatched again after the test."""
    from phi_finetune.testing import FakeAzureML

    with FakeAzureML() as fake:
        yield fake


@pytest.fixture
def fake_azureml_server(fake_azureml: FakeAzureML) -> Iterator[FakeServer]:
    """``fake_azureml`` served on 127.0.0.1: pass ``server.env()`` to a subprocess."""
    with fake_azureml.serve() as server:
        yield server
