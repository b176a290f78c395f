"""Every example in ``examples/`` runs: the local quickstart on the local backend, the Azure ones
and the notebook against ``FakeAzureML``. Each runs in ``tmp_path`` so nothing lands in the repo.
"""

from __future__ import annotations

import runpy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.testing import FakeAzureML

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _main(name: str) -> Callable[..., Any]:
    """An example's ``main`` without running its ``__main__`` block."""
    namespace = runpy.run_path(str(EXAMPLES / name), run_name=f"example_{Path(name).stem}")
    main: Callable[..., Any] = namespace["main"]
    return main


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    monkeypatch.chdir(tmp_path)
    with FakeAzureML() as service:
        service.add_compute("gpu-cluster", "Standard_NC24ads_A100_v4")
        yield service


@pytest.mark.slow
def test_quickstart_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / "quickstart_local.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "reply" in out and "model phi3-tiny-test-model-ultrachat-200k:1" in out
    runs = list((tmp_path / "phi-finetune-quickstart" / "state" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "sample_score.json").exists()


def test_finetune_phi3_ultrachat_is_short_and_its_config_loads() -> None:
    from phi_finetune.config import load_run_config

    lines = (EXAMPLES / "finetune_phi3_ultrachat.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 30
    config = load_run_config(EXAMPLES / "phi-finetune.toml")
    assert config.backend == "azure" and config.data.source == "HuggingFaceH4/ultrachat_200k"


def test_finetune_phi3_ultrachat_against_the_fake(
    fake: FakeAzureML, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phi_finetune.azure.backend import AzureBackend
    from phi_finetune.azure.workspace import Workspace

    # The shipped configuration, with the Hugging Face data set (unreachable offline) replaced
    # by the demo set shipped in the package.
    text = (EXAMPLES / "phi-finetune.toml").read_text(encoding="utf-8")
    text = text.replace('"HuggingFaceH4/ultrachat_200k"', '"demo"').replace(
        "split_pc = 5", "split_pc = 100"
    )
    config = tmp_path / "phi-finetune.toml"
    config.write_text(text, encoding="utf-8")
    workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())

    result = _main("finetune_phi3_ultrachat.py")(
        str(config), backend=AzureBackend(workspace=workspace, poll_interval_s=0)
    )

    assert result.reply == "echo: How long does it keep?"
    assert result.job_name and result.model and result.endpoint_name
    assert fake.endpoints == {}  # step 16: the endpoint was deleted
    out = capsys.readouterr().out
    assert "Phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora" in out  # the plan table
    assert f"endpoint {result.endpoint_name}" in out
    assert (tmp_path / ".phi_finetune" / "runs" / result.run_id / "journal.json").exists()


def test_compose_steps_against_the_fake(fake: FakeAzureML, tmp_path: Path) -> None:
    reply = _main("compose_steps.py")(
        fake.workspace_client(),
        fake.registry_client(),
        workdir=tmp_path / "work",
        poll_interval_s=0,
    )
    assert reply == "echo: What is 2 plus 2?"
    assert fake.endpoints == {}
    assert [name for name, _ in fake.models] == ["Phi-4-ultrachat-200k"]
    # the existing cluster was used, never created or updated
    assert not [r for r in fake.find_requests("PUT") if "/computes/" in r.path]
    assert (tmp_path / "work" / "data" / "train.jsonl").exists()


def test_notebook_is_committed_without_outputs() -> None:
    import nbformat

    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "Workspace.from_config()" in code[0].source


@pytest.mark.slow
def test_notebook_executes(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) >= 3  # data preview, counts, plan table (pandas)
    text = "".join(o.get("text", "") for o in outputs)
    assert "reply: echo:" in text and "deleted: ['endpoint:" in text
    assert (tmp_path / ".phi_finetune" / "runs").is_dir()
