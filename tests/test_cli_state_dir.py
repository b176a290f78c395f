"""Every command that uses run journals finds them the same way.

The state folder is ``--state-dir``, else the ``state_dir`` of ``--config``, else
``$PHI_FINETUNE_STATE_DIR``, else ``.phi_finetune``. Each test runs from a folder whose own
``.phi_finetune`` is empty, so a command that ignored the setting would not find the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.cli import endpoints as endpoints_cli
from phi_finetune.cli.main import main
from phi_finetune.errors import RunStateError
from phi_finetune.journal import Journal
from phi_finetune.session import FineTuneSession
from phi_finetune.testing import FakeAzureML

RUN_ID = "20260101T000000000Z-abc123"
HOW = ("env", "flag", "config")


@pytest.fixture
def journals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder holding one local run; the current folder is somewhere else."""
    monkeypatch.delenv("PHI_FINETUNE_STATE_DIR", raising=False)
    state = tmp_path / "journals"
    journal = Journal.create(state, RUN_ID, backend="local", config={"backend": "local"})
    journal.record_resource("local_server", "srv-1", details={"scoring_uri": "http://x/score"})
    journal.record_resource("endpoint", "gone-ep")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return state


def _given(how: str, state: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Name ``state`` the way ``how`` says; returns the extra command-line arguments."""
    if how == "env":
        monkeypatch.setenv("PHI_FINETUNE_STATE_DIR", str(state))
        return []
    if how == "flag":
        return ["--state-dir", str(state)]
    config = state.parent / "phi-finetune.toml"
    config.write_text(f'state_dir = "{state.as_posix()}"\n', encoding="utf-8")
    return ["--config", str(config)]


@pytest.mark.parametrize("how", HOW)
def test_status_lists_and_shows_the_run(
    how: str, journals: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _given(how, journals, monkeypatch)
    assert main(["status", *extra]) == 0
    assert RUN_ID in capsys.readouterr().out
    assert main(["status", RUN_ID, *extra]) == 0
    assert f"run {RUN_ID} (local)" in capsys.readouterr().out


@pytest.mark.parametrize("how", HOW)
def test_teardown_finds_the_run(
    how: str, journals: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _given(how, journals, monkeypatch)
    # Nothing billable is alive in this local run's journal, so nothing is deleted.
    Journal.load(journals, RUN_ID).mark_deleted("endpoint", "gone-ep")
    assert main(["teardown", RUN_ID, "--yes", *extra]) == 0
    assert "nothing billable left to delete" in capsys.readouterr().out


@pytest.mark.parametrize("how", HOW)
def test_report_finds_the_run(
    how: str, journals: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _given(how, journals, monkeypatch)
    assert main(["report", RUN_ID, *extra]) == 0
    assert f"report of run {RUN_ID}" in capsys.readouterr().out
    assert (journals / "runs" / RUN_ID / "report.md").is_file()


@pytest.mark.parametrize("how", HOW)
def test_invoke_run_finds_the_run(
    how: str, journals: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _given(how, journals, monkeypatch)
    assert main(["invoke", "--run", RUN_ID, "--message", "hi", *extra]) == 1
    err = capsys.readouterr().err
    # The run was found: the journaled endpoint has no scoring URI to call.
    assert f"run {RUN_ID}: the journal records endpoint 'gone-ep'" in err
    assert "phi-finetune status" not in err


@pytest.mark.parametrize("how", HOW)
def test_endpoints_list_reads_the_journals(
    how: str, journals: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _given(how, journals, monkeypatch)
    assert main(["endpoints", "list", "--journal-only", *extra]) == 0
    assert "srv-1" in capsys.readouterr().out


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with FakeAzureML() as fake:
        client = fake.workspace_client()
        monkeypatch.setattr(endpoints_cli, "_ml_client", lambda args: client)
        yield client


@pytest.mark.parametrize("how", HOW)
def test_endpoints_delete_marks_the_journal(
    how: str,
    journals: Path,
    fake_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = _given(how, journals, monkeypatch)
    assert main(["endpoints", "delete", "gone-ep", "--yes", *extra]) == 0
    assert f"recorded in run {RUN_ID}" in capsys.readouterr().out
    record = Journal.load(journals, RUN_ID).resource("endpoint")
    assert record is not None and record.state == "deleted"


def _capture(monkeypatch: pytest.MonkeyPatch, method: str) -> list[Path]:
    """Replace ``FineTuneSession.<method>`` by one that records ``state_dir`` and stops."""
    seen: list[Path] = []

    def fake(*args: Any, state_dir: Any = None, **kwargs: Any) -> Any:
        seen.append(Path(state_dir))
        raise RunStateError("stopped by the test")

    monkeypatch.setattr(FineTuneSession, method, fake)
    return seen


@pytest.mark.parametrize("how", HOW)
def test_resume_and_run_use_the_state_dir(
    how: str, journals: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = _given(how, journals, monkeypatch)
    resumed = _capture(monkeypatch, "resume")
    assert main(["resume", RUN_ID, *extra]) == 1
    started = _capture(monkeypatch, "from_config")
    assert main(["run", *extra]) == 1
    assert "stopped by the test" in capsys.readouterr().err
    assert resumed == [journals] and started == [journals]


def test_the_flag_beats_the_config_which_beats_the_environment(
    journals: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty"
    monkeypatch.setenv("PHI_FINETUNE_STATE_DIR", str(empty))
    assert main(["status"]) == 0
    assert f"no runs under {empty}" in capsys.readouterr().out
    config = _given("config", journals, monkeypatch)
    assert main(["status", *config]) == 0
    assert RUN_ID in capsys.readouterr().out
    assert main(["status", *config, "--state-dir", str(empty)]) == 0
    assert f"no runs under {empty}" in capsys.readouterr().out


def test_without_anything_the_default_is_dot_phi_finetune(
    journals: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 0
    assert "no runs under .phi_finetune" in capsys.readouterr().out


def _commands_with_state_dir() -> dict[str, str]:
    import argparse

    from phi_finetune.cli.main import build_parser

    found: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if "--state-dir" in action.option_strings:
                found[path] = str(action.help)
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())

    walk(build_parser(), "")
    return found


def test_one_state_dir_option_for_every_journal_command() -> None:
    from phi_finetune.cli._common import STATE_DIR_HELP

    found = _commands_with_state_dir()
    assert set(found) == {
        "run",
        "status",
        "resume",
        "teardown",
        "invoke",
        "endpoints list",
        "endpoints delete",
        "report",
        "rollout start",
        "rollout step",
        "rollout finish",
        "rollout rollback",
        "rollout status",
    }
    assert set(found.values()) == {STATE_DIR_HELP}


def test_the_python_api_honours_the_variable_too(
    journals: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.report import build_report

    monkeypatch.setenv("PHI_FINETUNE_STATE_DIR", str(journals))
    assert [run.run_id for run in FineTuneSession.list_runs()] == [RUN_ID]
    assert FineTuneSession.resume(RUN_ID).run_dir == journals / "runs" / RUN_ID
    assert build_report(RUN_ID, out_dir=journals.parent / "report").run_id == RUN_ID
    monkeypatch.delenv("PHI_FINETUNE_STATE_DIR")
    with pytest.raises(RunStateError):
        FineTuneSession.resume(RUN_ID)
