"""The fault matrix: the whole Azure flow (``FineTuneSession.run``, plan -> teardown) on
FakeAzureML, with connection resets, read timeouts, 429 (Retry-After) and 503 on every route the
flow uses, once and always.

- **once**: the run succeeds, with exactly one job, one model version, the three data assets and
  nothing left billing;
- **always** (``times=None``): the run raises a library error (never a raw azure-core, azure-ai-ml
  or requests exception) and the run's journal still loads.

Routes come from a clean run's request log, normalised (names in paths become ``{}``; see
``tests/_fault_harness.py``). "once" injects the fault on every route at the same time (each is
hit once, all in one run); the four single faults that failed the run before 0.2.0 run alone too.
"always" runs one route at a time; by default each route gets one fault kind (in rotation);
``PHI_FINETUNE_FAULT_MATRIX=full`` runs every route with every kind (several minutes; the same
as ``python benchmarks/fault_matrix.py``). Back-off waits are recorded, never slept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from _fault_harness import (
    KINDS,
    Route,
    discover_routes,
    new_fake,
    no_sleep,
    session_on,
    trial,
    trial_all_once,
)

from phi_finetune.azure.job import JobHandle
from phi_finetune.errors import AuthenticationError
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession

pytestmark = pytest.mark.slow

#: Where raw exceptions escaped or one fault failed the run before 0.2.0 (issue 15).
_FRAGILE = ("/listSecrets", "/listKeys", "blob.core.windows.net", "/score")
_FULL = os.environ.get("PHI_FINETUNE_FAULT_MATRIX", "") == "full"
_CHALLENGE = (
    'Bearer authorization_uri="https://login.microsoftonline.com/'
    '00000000-0000-0000-0000-0000000000aa", error="invalid_token", '
    'error_description="The access token expiry UTC time is earlier than current UTC time."'
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-matrix-data")


@pytest.fixture(scope="module")
def routes(data_dir: Path) -> list[Route]:
    found = discover_routes(data_dir)
    labels = " ".join(r.label for r in found)
    for fragment in (*_FRAGILE, "/jobs/{}", "/onlineEndpoints/{}", "registries/{}/models"):
        assert fragment in labels, f"the clean run did not use a route with {fragment!r}"
    return found


def _always_plan(routes: list[Route]) -> list[tuple[Route, str]]:
    if _FULL:
        return [(r, k) for r in routes for k in KINDS]
    # every route once, every kind on about a quarter of the routes (the full product is the
    # benchmark's): ~30 runs, most of them short (the flow stops at the failing route)
    return [(route, KINDS[i % len(KINDS)]) for i, route in enumerate(routes)]


@pytest.mark.parametrize("kind", KINDS)
def test_once_on_every_route_succeeds_without_duplicates(
    routes: list[Route], data_dir: Path, kind: str
) -> None:
    outcomes = trial_all_once(routes, kind, data_dir)
    failed = [f"{o.route.label}: hits={o.hits} {o.detail}" for o in outcomes if not o.held]
    assert failed == [], "\n".join(failed)


@pytest.mark.parametrize(
    ("method", "fragment", "kind"),
    [
        ("POST", "/listSecrets", "reset"),
        ("POST", "/listKeys", "timeout"),
        ("PUT", "blob.core.windows.net", "429"),
        ("POST", "/score", "timeout"),
    ],
)
def test_one_fault_that_used_to_fail_the_run(
    routes: list[Route], data_dir: Path, method: str, fragment: str, kind: str
) -> None:
    """Issue 15: each of these, once, failed the whole run (raw azure-core error or a library
    error without a retry); now the run succeeds."""
    (route,) = [r for r in routes if fragment in r.label and r.method == method]
    outcome = trial(route, kind, "once", data_dir)
    assert outcome.held, f"{route.label} {kind}: {outcome.detail}"


def test_always_on_every_route_raises_only_library_errors(
    routes: list[Route], data_dir: Path
) -> None:
    outcomes = [trial(route, kind, "always", data_dir) for route, kind in _always_plan(routes)]
    failed = [f"{o.route.label} {o.kind}: {o.detail}" for o in outcomes if not o.held]
    assert failed == [], "\n".join(failed)
    assert {o.kind for o in outcomes} == set(KINDS)
    assert {o.route for o in outcomes} == set(routes)


def test_a_409_while_the_endpoint_is_busy_is_waited_out(tmp_path: Path) -> None:
    with new_fake() as fake, no_sleep() as waits:
        fault = fake.inject_fault(
            "PUT",
            r"/onlineEndpoints/[^/?]+(\?|$)",
            status=409,
            times=3,
            code="Conflict",
            message="Endpoint is being deleted: another operation is in progress on it.",
        )
        session_on(fake, tmp_path, tmp_path / "data").run()
        assert fault.hits == 3
        assert len(fake.jobs) == 1 and fake.billable() == []
        assert len(waits) >= 3


# ------------------------------------------------------------------ 401 mid-run


@pytest.fixture
def expiring(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Once the job is submitted (the first ``JobHandle.wait``), every ARM request gets a 401
    with a WWW-Authenticate challenge: the credential expired mid-run. The list holds the fake
    once the test sets it; clear its faults to "sign in again"."""
    holder: list[Any] = []
    real_wait = JobHandle.wait

    def wait_then_expire(self: JobHandle, *args: Any, **kwargs: Any) -> Any:
        if holder and not getattr(holder[0], "_expired", False):
            fault = holder[0].inject_fault(
                None,
                r"^https://management\.azure\.com/",
                status=401,
                times=None,
                code="ExpiredAuthenticationToken",
                message="The access token expiry UTC time is earlier than current UTC time.",
            )
            fault.reply.headers["WWW-Authenticate"] = _CHALLENGE
            holder[0]._expired = True
        return real_wait(self, *args, **kwargs)

    monkeypatch.setattr(JobHandle, "wait", wait_then_expire)
    yield holder


def _job_puts(fake: Any) -> list[Any]:
    return [r for r in fake.find_requests("PUT", route="jobs.create") if r.status in (200, 201)]


def test_a_401_mid_run_is_one_error_and_resume_finishes(
    tmp_path: Path, expiring: list[Any]
) -> None:
    with new_fake() as fake, no_sleep():
        expiring.append(fake)
        session = session_on(fake, tmp_path, tmp_path / "data")
        with pytest.raises(AuthenticationError) as info:
            session.run()
        text = str(info.value)
        assert "az login --tenant 00000000-0000-0000-0000-0000000000aa" in text
        assert "phi-finetune resume" in text and "\n" not in text
        journal = Journal.load(tmp_path / "state", session.run_id)
        (job,) = [r.name for r in journal.resources(kind="job", alive_only=True)]
        assert list(fake.jobs) == [job]

        fake.clear_faults()  # signed in again
        resumed = FineTuneSession.resume(
            session.run_id, state_dir=tmp_path / "state", backend=session.backend
        )
        result = resumed.run()
        assert result.job_name == job
        assert list(fake.jobs) == [job] and len(_job_puts(fake)) == 1
        assert Journal.load(tmp_path / "state", session.run_id).status == "completed"


def test_cli_a_401_mid_run_is_one_line_exit_3_then_resume(
    tmp_path: Path,
    expiring: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from phi_finetune import session as session_module
    from phi_finetune.cli.main import EXIT_AUTH
    from phi_finetune.cli.main import main as cli
    from phi_finetune.config import DataConfig, DeployConfig, RunConfig

    config = RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
        deploy=DeployConfig(),
    )
    path = tmp_path / "phi-finetune.toml"
    path.write_text(config.to_toml())
    with new_fake() as fake, no_sleep():
        expiring.append(fake)
        backend = session_on(fake, tmp_path / "unused", tmp_path / "data").backend
        monkeypatch.setattr(session_module, "_make_backend", lambda *a, **k: backend)
        assert cli(["run", "--config", str(path), "--backend", "azure"]) == EXIT_AUTH == 3
        err = capsys.readouterr().err
        (error,) = [line for line in err.splitlines() if line.startswith("error: ")]
        assert "Traceback" not in err and "az login" in error
        assert err.rstrip().endswith(error)  # the error is the last line, one line
        (run_id,) = [p.name for p in (tmp_path / "state" / "runs").iterdir()]
        assert (
            len(Journal.load(tmp_path / "state", run_id).resources(kind="job", alive_only=True))
            == 1
        )

        fake.clear_faults()
        state = str(tmp_path / "state")
        assert cli(["resume", run_id, "--state-dir", state, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["run_id"] == run_id
        assert len(fake.jobs) == 1 and len(_job_puts(fake)) == 1
