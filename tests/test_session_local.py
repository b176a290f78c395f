"""FineTuneSession on the local backend: the whole flow, failures, resume, teardown, the demo CLI.

The tiny test model is trained once for the session (fixture ``shared_trained_run``); each test
works on its own copy of that trained run (``trained_run_copy``: a new run whose prepare_data,
plan and fine_tune steps and files are copied, see tests/_local_runs.py) and registers, deploys
and scores its own model. Where needed a real server starts on 127.0.0.1. The demo CLI test
trains on its own, end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.cli.main import main as cli
from phi_finetune.errors import PhiFinetuneError
from phi_finetune.journal import Journal
from phi_finetune.local.backend import LocalBackend
from phi_finetune.session import FineTuneSession

pytestmark = pytest.mark.slow


def _servers_under(root: Path) -> list[int]:
    """PIDs of local servers whose command line or environment points into ``root``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"phi_finetune.local.server" in cmdline and str(root).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_whole_run_scores_and_leaves_nothing_running(
    trained_run_copy: FineTuneSession, tmp_path: Path
) -> None:
    session = trained_run_copy
    assert session.run_dir.is_relative_to(tmp_path)
    result = session.run()
    assert isinstance(result.reply, str)
    assert result.request["input_data"]["input_string"][0][-1]["role"] == "user"
    assert (session.run_dir / "sample_score.json").exists()
    assert result.model is not None and str(result.model).endswith(":1")
    assert result.model.version == "1" and result.model.uri == f"models:/{result.model.name}/1"
    assert result.plan is not None and "learning_rate" in str(result.plan)
    journal = Journal.load(tmp_path / "state", result.run_id)
    for step in ("prepare_data", "plan", "fine_tune", "register", "deploy", "score", "teardown"):
        assert journal.is_completed(step), step
    assert journal.resources(billable_only=True, alive_only=True) == []
    assert _servers_under(tmp_path) == []
    assert result.job is not None and result.job.training is not None
    history = result.job.training.history
    assert len(history) == 4 and all(h["loss"] > 0 for h in history)
    assert journal.record_of("fine_tune") == result.job
    # Azure-only inputs are reported as ignored by the local backend, never silently dropped.
    assert result.plan is not None and "apply_deepspeed" in result.plan.ignored_on_local


def test_failure_between_steps_then_resume_does_not_repeat_work(
    trained_run_copy: FineTuneSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = trained_run_copy
    real_register = LocalBackend.register

    def broken(self: LocalBackend, ctx: Any) -> Any:
        raise PhiFinetuneError("registry unavailable (injected)")

    monkeypatch.setattr(LocalBackend, "register", broken)
    with pytest.raises(PhiFinetuneError, match="injected"):
        session.run()
    assert session.journal.is_completed("fine_tune")
    assert not session.journal.is_completed("register")
    training = session.journal.record_of("fine_tune").training
    merged = Path(training.merged_dir)
    assert merged.is_relative_to(session.run_dir)  # this run's own copy, not the shared one
    trained_at = merged.stat().st_mtime_ns
    trainings: list[object] = []

    def no_training(self: object, *args: Any, **kwargs: Any) -> Any:
        trainings.append(self)
        raise AssertionError("resume trained the model again")

    monkeypatch.setattr("phi_finetune.local.training.LocalTrainer.train", no_training)

    monkeypatch.setattr(LocalBackend, "register", real_register)
    resumed = FineTuneSession.resume(session.run_id, state_dir=tmp_path / "state")
    result = resumed.run()
    assert result.reply is not None
    assert merged.stat().st_mtime_ns == trained_at  # training was not run again
    assert trainings == []
    journal = Journal.load(tmp_path / "state", session.run_id)
    # the versionless intent journaled before the registry call is resolved (not alive)
    models = journal.resources(kind="model", alive_only=True)
    assert [(m.name, m.version) for m in models] == [(models[0].name, "1")]
    assert journal.record_of("fine_tune").training == training
    assert _servers_under(tmp_path) == []


def test_failure_after_deploy_stops_the_server(
    trained_run_copy: FineTuneSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = trained_run_copy

    def broken_invoke(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise PhiFinetuneError("scoring failed (injected)")

    monkeypatch.setattr("phi_finetune.endpoint.Endpoint.invoke_file", broken_invoke)
    with pytest.raises(PhiFinetuneError, match="injected"):
        session.run()
    assert session.journal.resources(billable_only=True, alive_only=True) == []
    assert _servers_under(tmp_path) == []


def test_teardown_of_a_run_whose_process_died_stops_its_server(
    trained_run_copy: FineTuneSession, tmp_path: Path
) -> None:
    session = trained_run_copy
    endpoint = session.deploy()
    assert endpoint.invoke([{"role": "user", "content": "Hello?"}], max_new_tokens=4).outputs
    pids = _servers_under(tmp_path)
    assert len(pids) == 1
    # The process that started the server is "gone": a fresh backend knows only the journal.
    deleted = FineTuneSession.teardown_run(
        session.run_id, state_dir=tmp_path / "state", backend=LocalBackend()
    )
    assert deleted == [f"local_server:{endpoint.name}"]
    import time

    for _ in range(50):
        if not _servers_under(tmp_path):
            break
        time.sleep(0.1)
    assert _servers_under(tmp_path) == []
    session.backend.delete_resource(session._context(), session.journal.resources()[-1])


def test_demo_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["demo", "--workdir", str(tmp_path / "demo"), "--max-steps", "3", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["reply"], str)
    assert set(out["timings"]) >= {"fine-tune (LoRA)", "teardown"}
    assert _servers_under(tmp_path) == []


def test_status_and_teardown_cli_on_a_local_run(
    trained_run_copy: FineTuneSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = trained_run_copy
    session.register()
    state = str(tmp_path / "state")
    assert cli(["status", "--state-dir", state, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [session.run_id]
    assert cli(["status", session.run_id, "--state-dir", state]) == 0
    assert "fine_tune" in capsys.readouterr().out
    assert cli(["teardown", session.run_id, "--state-dir", state, "--yes"]) == 0
    assert "nothing billable" in capsys.readouterr().out
    assert cli(["status", "no-such-run", "--state-dir", state]) == 1
