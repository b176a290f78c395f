"""The fault matrix: the whole Azure flow on FakeAzureML with one route failing in one way.

Shared by ``tests/test_fault_matrix.py`` and ``benchmarks/fault_matrix.py``. Routes are
discovered from a clean run's request log and normalised (names in paths become ``{}``), so a
fault can be injected on exactly one route of any later run.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from phi_finetune.azure.backend import AzureBackend
from phi_finetune.azure.workspace import Workspace
from phi_finetune.config import DataConfig, DeployConfig, RunConfig
from phi_finetune.errors import PhiFinetuneError
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession
from phi_finetune.testing import FakeAzureML

KINDS = ("reset", "timeout", "429", "503")
MODES = ("once", "always")
_PROVIDER = "Microsoft.MachineLearningServices"


@attrs.frozen
class Route:
    """A normalised route: method, host shape and path shape (``{}`` for a name)."""

    method: str
    host: str
    path: str

    @property
    def label(self) -> str:
        path = self.path.split(_PROVIDER, 1)[-1]
        return f"{self.method} {self.host}{path}"

    @property
    def pattern(self) -> str:
        host = re.escape(self.host).replace(r"\{\}", r"[^/]+")
        parts = []
        for segment in self.path.split("/"):
            if segment == "{}":
                parts.append(r"[^/?]+")
            elif segment == "**":
                parts.append(r"[^?]+")
            else:
                parts.append(re.escape(segment))
        return "^https://" + host + "/".join(parts) + r"(\?.*)?$"


def normalise(method: str, url: str) -> Route:
    """The route of a request: names after each collection in the path become ``{}``."""
    parts = urlsplit(url)
    host = parts.netloc.lower()
    segments = parts.path.split("/")
    if host.endswith(".inference.ml.azure.com"):
        host = "{}." + host.split(".", 1)[1]
    elif host.endswith(".blob.core.windows.net"):
        # container, then the blob's path (any depth)
        return Route(method, host, "/".join([*segments[:2], "**"]))
    if _PROVIDER in segments:
        start = segments.index(_PROVIDER) + 1
        segments = [
            "{}" if i > start and (i - start) % 2 == 1 else s for i, s in enumerate(segments)
        ]
    return Route(method, host, "/".join(segments))


def _config(root: Path, data_dir: Path) -> RunConfig:
    return RunConfig(
        backend="azure",
        state_dir=root / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=data_dir),
        deploy=DeployConfig(),
    )


def new_fake() -> FakeAzureML:
    fake = FakeAzureML()
    fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
    return fake


def session_on(fake: FakeAzureML, root: Path, data_dir: Path) -> FineTuneSession:
    def factory(kind: str, credential: Any, config: Any) -> Any:
        # The registry client is made by the library, on first use: its creation (registry
        # discovery) is one of the routes under test.
        return fake.registry_client(config.registry_name or "azureml")

    workspace = Workspace.from_clients(
        fake.workspace_client(), credential=fake.credential(), client_factory=factory
    )
    return FineTuneSession(
        _config(root, data_dir), backend=AzureBackend(workspace=workspace, poll_interval_s=0)
    )


@contextmanager
def no_sleep() -> Iterator[list[float]]:
    """Back-off sleeps of the library's retry policy recorded, not slept."""
    from azure.core.pipeline.transport import HttpTransport

    from phi_finetune.azure import boundary

    slept: list[float] = []
    saved = HttpTransport.__dict__["sleep"]

    def transport_sleep(transport: Any, duration: float) -> None:
        slept.append(float(duration))

    # azure-storage-blob wraps the transport (its retry back-off calls the base class's sleep,
    # which FakeAzureML does not patch): without this one 503 on an upload sleeps ~16 s.
    HttpTransport.sleep = transport_sleep  # type: ignore[method-assign]
    try:
        if hasattr(boundary, "sleeping"):
            with boundary.sleeping(slept.append):
                yield slept
        else:  # the code before 0.2.0 (to measure it): no hook, so no back-off at all
            import unittest.mock

            with unittest.mock.patch("time.sleep", slept.append):
                yield slept
    finally:
        HttpTransport.sleep = saved  # type: ignore[method-assign]


def discover_routes(data_dir: Path) -> list[Route]:
    """Every route of a clean run, in first-use order."""
    with tempfile.TemporaryDirectory() as root, new_fake() as fake, no_sleep():
        session_on(fake, Path(root), data_dir).run()
        routes: list[Route] = []
        for req in fake.requests:
            found = normalise(req.method, req.url)
            if found not in routes:
                routes.append(found)
        return routes


@attrs.frozen
class Outcome:
    """What one trial did: ``held`` says whether it met its mode's contract."""

    route: Route
    kind: str
    mode: str
    held: bool
    hits: int
    detail: str


def inject(fake: FakeAzureML, route: Route, kind: str, *, times: int | None) -> Any:
    kwargs: dict[str, Any] = {"times": times}
    if kind == "reset":
        kwargs["connection_reset"] = True
    elif kind == "timeout":
        kwargs["read_timeout"] = True
    elif kind == "429":
        kwargs.update(status=429, retry_after=2)
    else:
        kwargs["status"] = 503
    return fake.inject_fault(route.method, route.pattern, **kwargs)


def _duplicates(fake: FakeAzureML) -> list[str]:
    """Resources made twice (a job, a model version) or left behind (billable ones)."""
    problems = []
    if len(fake.jobs) != 1:
        problems.append(f"jobs: {sorted(fake.jobs)}")
    if len(fake.models) != 1:
        problems.append(f"models: {sorted(fake.models)}")
    if len(fake.data_assets) != 2:  # train and test; test_gen stays local
        problems.append(f"data assets: {sorted(fake.data_assets)}")
    if fake.billable():
        problems.append(f"left billing: {fake.billable()}")
    return problems


def trial(route: Route, kind: str, mode: str, data_dir: Path) -> Outcome:
    """One run with ``kind`` injected on ``route`` once or always; see the module docstring of
    tests/test_fault_matrix.py for what "held" means."""
    with tempfile.TemporaryDirectory() as root, new_fake() as fake, no_sleep():
        fault = inject(fake, route, kind, times=1 if mode == "once" else None)
        session = session_on(fake, Path(root), data_dir)
        try:
            session.run()
        except PhiFinetuneError as exc:
            error: BaseException | None = exc
        except Exception as exc:  # the contract under test: this must never happen
            return Outcome(
                route,
                kind,
                mode,
                False,
                fault.hits,
                f"raw {type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}",
            )
        else:
            error = None
        try:
            Journal.load(Path(root) / "state", session.run_id)
        except Exception as exc:
            return Outcome(route, kind, mode, False, fault.hits, f"journal broken: {exc}")
        if fault.hits == 0:
            return Outcome(route, kind, mode, False, 0, "the fault was never hit")
        if mode == "once":
            if error is not None:
                return Outcome(route, kind, mode, False, fault.hits, f"failed: {error}"[:300])
            problems = _duplicates(fake)
            held = not problems
            return Outcome(route, kind, mode, held, fault.hits, "; ".join(problems) or "ok")
        if error is None:
            # the route is optional to the flow (e.g. a best-effort read): still fine
            return Outcome(route, kind, mode, True, fault.hits, "succeeded without the route")
        return Outcome(route, kind, mode, True, fault.hits, f"{type(error).__name__}")


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def trial_all_once(routes: list[Route], kind: str, data_dir: Path) -> list[Outcome]:
    """One run with ``kind`` injected once on every route at the same time: one outcome per
    route (held: the run succeeded, that route's fault was hit, nothing made twice or left)."""
    with tempfile.TemporaryDirectory() as root, new_fake() as fake, no_sleep():
        faults = [inject(fake, route, kind, times=1) for route in routes]
        session = session_on(fake, Path(root), data_dir)
        try:
            session.run()
        except Exception as exc:
            detail = f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}"
            return [
                Outcome(r, kind, "once", False, f.hits, detail)
                for r, f in zip(routes, faults, strict=False)
            ]
        problems = "; ".join(_duplicates(fake))
        return [
            Outcome(r, kind, "once", f.hits == 1 and not problems, f.hits, problems or "ok")
            for r, f in zip(routes, faults, strict=False)
        ]
