"""Test-suite wide fixtures: no network, isolated state folders, deterministic CLI output."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from phi_finetune.journal import Journal
    from phi_finetune.session import FineTuneSession

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class NetworkBlocked(RuntimeError):
    """A test tried to reach the network."""


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in _LOOPBACK_HOSTS or host.startswith("127.")
    return isinstance(address, str | bytes)  # unix sockets are local


@pytest.fixture
def restore_cli_logger_levels() -> Iterator[None]:
    """The CLI quietens some libraries' loggers; keep that from leaking into other tests."""
    import logging

    noisy = ("azure", "urllib3", "mlflow", "httpx", "filelock")
    saved = {name: logging.getLogger(name).level for name in noisy}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="session")
def _session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder (e.g. the MLflow schema copy) per test session, never ``~/.cache``."""
    return tmp_path_factory.mktemp("phi-finetune-cache")


@pytest.fixture(autouse=True)
def block_network(monkeypatch: pytest.MonkeyPatch, _session_cache_dir: Path) -> Iterator[list[str]]:
    """Fail any test that tries to connect or resolve a name outside the loopback interface."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            attempts.append(f"connect {address!r}")
            raise NetworkBlocked(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            attempts.append(f"connect {address!r}")
            raise NetworkBlocked(f"test tried to connect to {address!r}")
        return real_connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if (
            name is not None
            and str(name) not in _LOOPBACK_HOSTS
            and not str(name).startswith("127.")
        ):
            attempts.append(f"resolve {name!r}")
            raise NetworkBlocked(f"test tried to resolve {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    for name in ("AZUREML_CURRENT_CLOUD", "ARM_CLOUD_METADATA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("PHI_FINETUNE_NO_PROGRESS", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("PHI_FINETUNE_CACHE_DIR", str(_session_cache_dir))
    yield attempts
    if attempts:
        pytest.fail(f"the test tried to use the network: {attempts}")


@pytest.fixture(autouse=True)
def library_backoff_not_slept() -> Iterator[list[float]]:
    """The library's retry back-off (``phi_finetune.azure.boundary``) is recorded, not slept."""
    from phi_finetune.azure.boundary import sleeping

    waits: list[float] = []
    with sleeping(waits.append):
        yield waits


@pytest.fixture(scope="session")
def shared_trained_run(
    tmp_path_factory: pytest.TempPathFactory, _session_cache_dir: Path
) -> Iterator[tuple[Journal, Path]]:
    """``(journal, root)`` of one demo run trained up to ``fine_tune`` (see tests/_local_runs.py).

    Shared by every test of the session: read it, never change it; use ``trained_run_copy``.
    """
    from _local_runs import train_shared_run

    root = tmp_path_factory.mktemp("shared-trained-run")
    with pytest.MonkeyPatch.context() as mp:
        # Session-scoped, so outside ``block_network``: the same guard, for the training only.
        attempts = _guard_network(mp)
        mp.setenv("PHI_FINETUNE_CACHE_DIR", str(_session_cache_dir))
        journal = train_shared_run(root)
    assert attempts == [], f"training the shared run tried to use the network: {attempts}"
    store = root / "state" / "mlflow.db"
    trained = journal.path.read_bytes(), store.read_bytes()
    yield journal, root
    assert journal.path.read_bytes() == trained[0], "a test changed the shared run's journal"
    assert store.read_bytes() == trained[1], "a test wrote into the shared run's MLflow store"


@pytest.fixture
def trained_run_copy(shared_trained_run: tuple[Journal, Path], tmp_path: Path) -> FineTuneSession:
    """A new local session under ``tmp_path`` whose prepare_data/plan/fine_tune steps are the
    shared run's, with its own copy of the data, trained model and MLflow store."""
    from _local_runs import copy_trained_run

    journal, root = shared_trained_run
    return copy_trained_run(journal, root, tmp_path)


def _guard_network(mp: pytest.MonkeyPatch) -> list[str]:
    """Refuse non-loopback connections and set the offline switches on ``mp``."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if not _is_loopback(address):
            attempts.append(f"connect {address!r}")
            raise NetworkBlocked(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    mp.setattr(socket.socket, "connect", guarded_connect)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        mp.setenv(name, "1")
    mp.setenv("PHI_FINETUNE_NO_PROGRESS", "1")
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return attempts
