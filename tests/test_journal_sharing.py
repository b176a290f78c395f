"""The journal is safe to share: concurrent writers, a second driver, kills, bad journals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from phi_finetune.errors import RunInUseError, RunStateError
from phi_finetune.journal import Journal, list_runs

_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from phi_finetune.journal import Journal
    state_dir, run_id, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    journal = Journal.load(state_dir, run_id)
    Path(state_dir, "ready-" + prefix).touch()
    for _ in range(6000):  # both have loaded the journal before either writes (bounded wait)
        if Path(state_dir, "go").exists():
            break
        time.sleep(0.01)
    for i in range(count):
        journal.record_resource("data_asset", f"{prefix}-{i}", version=1)
    """
)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_writing_one_run_lose_no_records(tmp_path: Path) -> None:
    Journal.create(tmp_path, "shared", backend="azure")
    count = 150
    writers = [_spawn(_WRITER, str(tmp_path), "shared", p, str(count)) for p in ("a", "b")]
    for prefix, proc in zip(("a", "b"), writers, strict=True):
        _wait_for(tmp_path / f"ready-{prefix}", proc)
    (tmp_path / "go").touch()
    for proc in writers:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    names = {r.name for r in Journal.load(tmp_path, "shared").resources()}
    assert len(names) == 2 * count


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from phi_finetune.journal import Journal
    state_dir, run_id, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    journal = Journal.load(state_dir, run_id)
    with journal.driving():
        ready.write_text("held")
        time.sleep(60)
    """
)


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)


def test_a_second_driver_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "busy", backend="local")
    ready = tmp_path / "ready"
    holder = _spawn(_HOLDER, str(tmp_path), "busy", str(ready))
    try:
        _wait_for(ready, holder)
        started = time.monotonic()
        busy = rf"run busy is in use by process {holder.pid}"
        with pytest.raises(RunInUseError, match=busy), journal.driving(wait_s=0.3):
            pass
        assert time.monotonic() - started >= 0.3
        # Writing the journal (e.g. a teardown from another terminal) is still possible.
        journal.record_resource("endpoint", "ep", state="creating")
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    # The operating system released the killed holder's lock: this process may drive now.
    with journal.driving(wait_s=5):
        journal.begin_step("deploy")
    assert Journal.load(tmp_path, "busy").get_step("deploy") is not None


def test_driving_is_reentrant_in_one_process(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r", backend="local")
    again = Journal.load(tmp_path, "r")
    with journal.driving(wait_s=0.1), again.driving(wait_s=0.1):
        again.begin_step("prepare_data")
    assert journal.to_dict()["steps"] == {}  # the first object's view is refreshed on write only
    journal.complete_step("prepare_data", {"rows": 1})
    assert Journal.load(tmp_path, "r").is_completed("prepare_data")


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from phi_finetune.journal import Journal
    journal = Journal.load(sys.argv[1], sys.argv[2])
    def replace(src, dst):
        os.kill(os.getpid(), 9)  # SIGKILL after the temp file is written, before the rename
    os.replace = replace
    journal.record_resource("endpoint", "ep", state="creating")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "k", backend="azure")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), "k"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert list(journal.run_dir.glob(".journal.json.*.tmp"))  # the kill left one behind
    journal.record_resource("endpoint", "ep", state="creating")
    assert not list(journal.run_dir.glob("*.tmp"))
    assert Journal.load(tmp_path, "k").resource("endpoint") is not None


def _write_raw(state_dir: Path, run_id: str, text: str) -> Path:
    folder = state_dir / "runs" / run_id
    folder.mkdir(parents=True)
    path = folder / "journal.json"
    path.write_text(text, encoding="utf-8")
    return path


def _good_journal(state_dir: Path, run_id: str) -> dict[str, object]:
    return Journal.create(state_dir, run_id, backend="local").to_dict()


_BAD_FIELDS = {
    "attempts_many": (
        "steps",
        {"deploy": {"name": "deploy", "status": "failed", "attempts": "many"}},
    ),
    "status_wrong": ("steps", {"deploy": {"name": "deploy", "status": 3}}),
    "outputs_list": ("steps", {"deploy": {"name": "deploy", "status": "completed", "outputs": []}}),
    "details_text": (
        "resources",
        [{"kind": "job", "name": "j", "state": "created", "details": "x"}],
    ),
    "billable_text": (
        "resources",
        [{"kind": "job", "name": "j", "state": "created", "billable": "y"}],
    ),
    "name_number": ("resources", [{"kind": "job", "name": 5, "state": "created"}]),
    "state_unknown": ("resources", [{"kind": "job", "name": "j", "state": "gone"}]),
    "seq_text": ("seq", "one"),
    "created_at_list": ("created_at", []),
}


@pytest.mark.parametrize("case", sorted(_BAD_FIELDS))
def test_a_wrong_typed_field_is_one_clear_error_and_hides_no_other_run(
    tmp_path: Path, case: str
) -> None:
    good = _good_journal(tmp_path, "good")
    key, value = _BAD_FIELDS[case]
    bad = {**good, "run_id": "bad", key: value}
    path = _write_raw(tmp_path, "bad", json.dumps(bad))
    with pytest.raises(RunStateError, match=str(path).replace("\\", "\\\\")):
        Journal.load(tmp_path, "bad")
    runs = {r.run_id: r for r in list_runs(tmp_path)}
    assert runs["good"].status != "unreadable"
    assert runs["bad"].status == "unreadable"
    assert str(path) in (runs["bad"].error or "")


def test_a_deeply_nested_journal_is_one_clear_error(tmp_path: Path) -> None:
    _good_journal(tmp_path, "good")
    path = _write_raw(tmp_path, "deep", "[" * 200_000 + "]" * 200_000)
    with pytest.raises(RunStateError, match="nested too deeply"):
        Journal.load(tmp_path, "deep")
    runs = {r.run_id: r.status for r in list_runs(tmp_path)}
    assert runs == {"deep": "unreadable", "good": runs["good"]}
    assert runs["good"] != "unreadable"
    assert path.exists()  # never deleted or rewritten: the user decides


def test_status_lists_every_run_when_one_journal_is_bad(tmp_path: Path) -> None:
    _good_journal(tmp_path, "good-run")
    good = json.loads((tmp_path / "runs" / "good-run" / "journal.json").read_text())
    bad = {
        **good,
        "run_id": "bad-run",
        "steps": {"x": {"name": "x", "status": "failed", "attempts": "many"}},
    }
    _write_raw(tmp_path, "bad-run", json.dumps(bad))
    env = {**os.environ, "PHI_FINETUNE_STATE_DIR": str(tmp_path)}
    listed = subprocess.run(
        [sys.executable, "-m", "phi_finetune.cli.main", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert "Traceback" not in listed.stderr
    assert "good-run" in listed.stdout and "bad-run" in listed.stdout + listed.stderr
    one = subprocess.run(
        [sys.executable, "-m", "phi_finetune.cli.main", "status", "bad-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert one.returncode != 0
    assert "Traceback" not in one.stderr
    assert "'attempts' is 'many'" in one.stderr
