"""The Python code on the how-to pages runs: against ``FakeAzureML`` for the Azure steps, on the
local backend for the report page. Blocks run in page order in one namespace, after a set-up
that provides what the page assumes (a ``workspace``, a ``model``, an ``endpoint``, files).

A block preceded by ``% docs-test: skip: <reason>`` (a MyST comment, not rendered; in the README
``<!-- docs-test: skip: <reason> -->``) is not run; the reason is required and is checked here,
so nothing is left out silently. The README's and getting-started's local quickstarts run too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.testing import FakeAzureML

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_SKIP = re.compile(r"^(?:% |<!-- )docs-test: skip: (?P<reason>\S.*?)(?: -->)?$")


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of every ```python block of a page."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.match(before)
        blocks.append((line, match.group(1), skip["reason"] if skip else None))
    return blocks


def run_page(page: Path, namespace: dict[str, Any]) -> None:
    for line, code, skip in python_blocks(page):
        if skip is None:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)


# ----------------------------------------------------------------------------- set-ups


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    monkeypatch.chdir(tmp_path)
    with FakeAzureML() as service:
        yield service


def _workspace(fake: FakeAzureML, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Workspace on the fake; ``Workspace.resolve()`` on the pages returns it too."""
    from phi_finetune.azure.workspace import Workspace

    workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
    monkeypatch.setattr(Workspace, "resolve", classmethod(lambda cls, *a, **k: workspace))
    return workspace


def setup_compute(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    return {"workspace": _workspace(fake, mp)}


def setup_data(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    import datasets
    import pandas as pd

    from phi_finetune.data import UltraChatDataset

    rows = UltraChatDataset.demo().head(40)
    (tmp / "ultrachat_200k_dataset").mkdir()
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp / "ultrachat_200k_dataset" / "train_sft.jsonl").write_text(lines, encoding="utf-8")
    (tmp / "mine.jsonl").write_text(lines, encoding="utf-8")
    datasets.DatasetDict({"train_sft": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp / "saved_dir")
    )
    return {"df": pd.DataFrame(rows), "ml_client": _workspace(fake, mp).ml_client}


def setup_parameters(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    from phi_finetune.azure.foundation_model import resolve_foundation_model

    workspace = _workspace(fake, mp)
    model = resolve_foundation_model(
        workspace.registry_client, "Phi-3-mini-4k-instruct", version=15, allow_retired=True
    )
    return {"model": model}


def setup_job(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    fake.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
    return {"workspace": _workspace(fake, mp)}


def setup_resolve_only(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    """Pages that call ``Workspace.resolve()`` themselves."""
    _workspace(fake, mp)
    return {}


def setup_completed_job(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    """The pages register from job ``calm_kiwi_x1y2``: the registrar checks that it completed."""
    from types import SimpleNamespace

    from azure.ai.ml.operations import JobOperations

    original = JobOperations.get

    def get(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "calm_kiwi_x1y2":
            return SimpleNamespace(name=name, status="Completed", outputs={"trained_model": None})
        return original(self, name, *args, **kwargs)

    mp.setattr(JobOperations, "get", get)
    fake.add_completed_job("calm_kiwi_x1y2")  # the fake, like Azure, checks the job's output
    return setup_resolve_only(fake, mp, tmp)


def _deployed(fake: FakeAzureML, mp: pytest.MonkeyPatch) -> dict[str, Any]:
    from phi_finetune import EndpointDeployer, ModelRegistrar

    ml_client = _workspace(fake, mp).ml_client
    fake.add_completed_job("calm_kiwi_x1y2")
    model = ModelRegistrar(ml_client, check_job_output=False).register(
        "calm_kiwi_x1y2", base_model="Phi-3-mini-4k-instruct"
    )
    endpoint = EndpointDeployer(ml_client, poll_interval_s=0).deploy(model)
    return {"ml_client": ml_client, "model": model, "endpoint": endpoint}


def setup_score(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    from phi_finetune.data import UltraChatDataset, write_sample_score

    write_sample_score(UltraChatDataset.demo().head(1, split="test_gen")[0], "sample_score.json")
    return _deployed(fake, mp)


def setup_teardown(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    return _deployed(fake, mp)


def setup_rollout(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    from phi_finetune import ModelRegistrar

    namespace = _deployed(fake, mp)
    fake.add_completed_job("calm_kiwi_v2")
    namespace["new_model"] = ModelRegistrar(
        namespace["ml_client"], check_job_output=False
    ).register("calm_kiwi_v2", base_model="Phi-3-mini-4k-instruct")
    return namespace


def setup_serverless(fake: FakeAzureML, mp: pytest.MonkeyPatch, tmp: Path) -> dict[str, Any]:
    """A hub-based project, a ``phi-finetune.toml`` for the demo data, the session's backend
    on the fake (no poll waits)."""
    from phi_finetune import session as session_module
    from phi_finetune.serverless.backend import ServerlessBackend

    fake.set_workspace_kind("Project")
    ws = _workspace(fake, mp)

    def make_backend(config: Any, *, workspace: Any = None) -> Any:
        return ServerlessBackend(workspace=ws, poll_interval_s=0)

    mp.setattr(session_module, "_make_backend", make_backend)
    (tmp / "phi-finetune.toml").write_text(
        'backend = "serverless"\n[data]\nsource = "demo"\nsplit_pc = 100\n', encoding="utf-8"
    )
    return {}


SETUPS: dict[str, Callable[[FakeAzureML, pytest.MonkeyPatch, Path], dict[str, Any]]] = {
    "compute": setup_compute,
    "data": setup_data,
    "models": setup_resolve_only,
    "parameters": setup_parameters,
    "job": setup_job,
    "register": setup_completed_job,
    "deploy": setup_completed_job,
    "score": setup_score,
    "teardown": setup_teardown,
    "cost": setup_resolve_only,
    "rollout": setup_rollout,
    "serverless": setup_serverless,
}


def test_every_howto_page_is_covered_and_every_skip_has_a_reason() -> None:
    pages = {p.stem for p in (DOCS / "howto").glob("*.md")}
    assert pages == {*SETUPS, "report"}
    for page in (DOCS / "howto").glob("*.md"):
        text = page.read_text(encoding="utf-8")
        marks = [line for line in text.splitlines() if line.startswith("% docs-test")]
        assert all(_SKIP.match(mark) for mark in marks), marks
        blocks = python_blocks(page)
        assert blocks and any(skip is None for _, _, skip in blocks), page.name


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_howto_page_runs_against_the_fake(
    name: str, fake: FakeAzureML, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_howto_{name}"}
    namespace.update(SETUPS[name](fake, monkeypatch, tmp_path))
    run_page(DOCS / "howto" / f"{name}.md", namespace)
    unrouted = fake.unrouted
    if name == "job":
        # handle.metrics() asks the workspace's MLflow, which the fake does not serve: it says
        # why instead of raising
        assert namespace["handle"].metrics().reason
        unrouted = [r for r in unrouted if not _mlflow_call(r.url)]
    assert unrouted == []


def _mlflow_call(url: str) -> bool:
    return "/metadata/endpoints" in url or "/mlflow/" in url


@pytest.mark.slow
def test_report_page_runs_on_the_local_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_howto_report"}
    run_page(DOCS / "howto" / "report.md", namespace)
    assert Path(namespace["report"].png).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_local_quickstart_runs(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(ROOT / page)
    assert all(skip for _, code, skip in blocks if 'backend="local"' not in code)
    namespace: dict[str, Any] = {"__name__": "docs_quickstart"}
    run_page(ROOT / page, namespace)
    assert namespace["result"].reply
    assert namespace["result"].reply in capsys.readouterr().out
