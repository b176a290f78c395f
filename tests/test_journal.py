"""The run journal: every mutation persisted atomically (0600), no secrets, crash-safe."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from phi_finetune.errors import RunStateError
from phi_finetune.journal import Journal, default_state_dir, list_runs, new_run_id

SECRET = "sk-SuperSecretEndpointKey-0123456789abcdef"


def test_create_writes_a_0600_journal_with_the_config(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, backend="azure", config={"model": {"name": "phi"}})
    assert journal.path == tmp_path / "runs" / journal.run_id / "journal.json"
    assert journal.run_dir == journal.path.parent
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    data = json.loads(journal.path.read_text())
    assert data["backend"] == "azure"
    assert data["config"] == {"model": {"name": "phi"}}
    assert journal.status == "new"
    assert journal.last_completed_step is None
    assert "run_id" in repr(journal)


def test_run_ids_sort_by_creation_and_are_unique() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert ids == sorted(ids, key=lambda i: i.split("-")[0])
    assert sorted(ids)[0][:8].isdigit()


def test_existing_run_id_is_refused(tmp_path: Path) -> None:
    Journal.create(tmp_path, "run-1", backend="local")
    with pytest.raises(RunStateError, match="resume"):
        Journal.create(tmp_path, "run-1", backend="local")


def test_every_mutation_is_on_disk(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r1", backend="azure", config={})

    def on_disk() -> Journal:
        return Journal.load(tmp_path, "r1")

    journal.begin_step("fine_tune", {"compute": "gpu"})
    assert on_disk().get_step("fine_tune").status == "running"  # type: ignore[union-attr]
    assert on_disk().status == "running"
    journal.record_resource("job", "calm_kiwi", state="creating")
    assert on_disk().resource("job").state == "creating"  # type: ignore[union-attr]
    journal.record_resource("job", "calm_kiwi", details={"studio_url": "https://x"})
    assert on_disk().resource("job").details == {"studio_url": "https://x"}  # type: ignore[union-attr]
    journal.complete_step("fine_tune", {"job_name": "calm_kiwi"})
    reloaded = on_disk()
    assert reloaded.outputs_of("fine_tune") == {"job_name": "calm_kiwi"}
    assert reloaded.last_completed_step == "fine_tune"
    assert reloaded.status == "incomplete"
    journal.begin_step("register")
    journal.fail_step("register", RuntimeError("boom"))
    reloaded = on_disk()
    assert reloaded.status == "failed"
    assert reloaded.get_step("register").error == "RuntimeError: boom"  # type: ignore[union-attr]
    assert reloaded.last_completed_step == "fine_tune"
    journal.begin_step("register")
    assert on_disk().get_step("register").attempts == 2  # type: ignore[union-attr]
    journal.complete_step("register", {"model": "m:1"})
    journal.finish()
    assert on_disk().status == "completed"
    assert on_disk().last_completed_step == "register"


def test_step_context_manager(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, backend="local")
    with journal.step("plan", {"x": 1}) as outputs:
        outputs["gpus"] = 4
    assert journal.outputs_of("plan") == {"gpus": 4}
    with pytest.raises(ValueError), journal.step("deploy"):
        raise ValueError("no quota")
    step = Journal.load(tmp_path, journal.run_id).get_step("deploy")
    assert step is not None and step.status == "failed" and "no quota" in (step.error or "")
    with pytest.raises(RunStateError, match="deploy"):
        journal.outputs_of("deploy")
    with pytest.raises(RunStateError, match="never ran"):
        journal.outputs_of("score")


def test_completing_a_step_that_is_not_running_is_an_error(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, backend="local")
    with pytest.raises(RunStateError, match="begin_step"):
        journal.complete_step("plan")


def test_completed_step_can_run_again(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, backend="local")
    with journal.step("deploy") as out:
        out["endpoint"] = "a"
    with journal.step("deploy") as out:
        out["endpoint"] = "b"
    assert journal.outputs_of("deploy") == {"endpoint": "b"}
    assert journal.get_step("deploy").attempts == 2  # type: ignore[union-attr]


def test_resources_and_filters(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, backend="azure")
    journal.record_resource("data_asset", "train", version="1")
    journal.record_resource("compute", "gpu", created_by_run=False)
    journal.record_resource("model", "m", version=3)
    journal.record_resource("endpoint", "ep-1", state="creating", details={"scoring_uri": "u"})
    journal.record_resource("deployment", "demo")
    assert [r.name for r in journal.resources(billable_only=True)] == ["gpu", "ep-1", "demo"]
    assert journal.resource("model").version == "3"  # type: ignore[union-attr]
    journal.record_resource("endpoint", "ep-1", state="created")
    assert journal.resource("endpoint").details == {"scoring_uri": "u"}  # type: ignore[union-attr]
    assert journal.mark_deleted("endpoint", "ep-1") is not None
    assert journal.mark_deleted("endpoint", "never-seen") is None
    alive = [r.name for r in journal.resources(alive_only=True, billable_only=True)]
    assert alive == ["gpu", "demo"]
    assert [r.name for r in journal.resources(kind="endpoint")] == ["ep-1"]
    summary = Journal.load(tmp_path, journal.run_id).summary()
    assert [r.name for r in summary.billable_alive] == ["demo"]  # gpu was reused, not created
    with pytest.raises(RunStateError, match="unknown resource kind"):
        journal.record_resource("bucket", "x")
    with pytest.raises(RunStateError, match="unknown resource state"):
        journal.record_resource("job", "x", state="gone")  # type: ignore[arg-type]


def test_no_secrets_are_stored(tmp_path: Path) -> None:
    journal = Journal.create(
        tmp_path,
        backend="azure",
        config={"endpoint": {"key": SECRET, "name": "ep"}, "note": f"Bearer {SECRET}"},
    )
    journal.begin_step("score", {"headers": {"Authorization": f"Bearer {SECRET}"}})
    journal.record_resource(
        "local_server",
        "srv",
        details={
            "primary_key": SECRET,
            "api_key": SECRET,
            "scoring_uri": "http://127.0.0.1:1/score",
        },
    )
    journal.fail_step("score", f"Authorization: Bearer {SECRET}")
    assert SECRET not in journal.path.read_text()
    journal.add_secret(SECRET)
    journal.fail_step("score", f"401 for key {SECRET!r}")
    journal.record_resource("endpoint", "ep", details={"note": f"key was {SECRET}"})
    text = journal.path.read_text()
    assert SECRET not in text
    assert journal.config["endpoint"]["name"] == "ep"
    assert journal.resource("local_server").details["scoring_uri"].startswith("http")  # type: ignore[union-attr]


def test_generation_parameters_are_not_mistaken_for_secrets(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, backend="local", config={"score": {"max_new_tokens": 200}})
    assert journal.config == {"score": {"max_new_tokens": 200}}


def test_load_unknown_and_bad_run_ids(tmp_path: Path) -> None:
    with pytest.raises(RunStateError, match="phi-finetune status"):
        Journal.load(tmp_path, "nope")
    for bad in ("../etc", "a/b", ""):
        with pytest.raises(RunStateError, match="not valid"):
            Journal.load(tmp_path, bad)


@pytest.mark.parametrize(
    "content",
    ['{"format": 1, "run_id": "r"', "[]", '{"format": 99}', "\x00\x01", ""],
)
def test_corrupt_journal_is_a_clear_error(tmp_path: Path, content: str) -> None:
    journal = Journal.create(tmp_path, "r", backend="azure")
    journal.path.write_text(content)
    with pytest.raises(RunStateError, match="cannot be used") as info:
        Journal.load(tmp_path, "r")
    assert "Azure ML studio" in str(info.value)
    runs = list_runs(tmp_path)
    assert runs[0].status == "unreadable" and runs[0].error


def test_list_runs_shows_what_each_run_still_holds(tmp_path: Path) -> None:
    assert list_runs(tmp_path) == []
    a = Journal.create(tmp_path, "20260101T000000000Z-aaaaaa", backend="azure")
    a.record_resource("endpoint", "ep-a")
    b = Journal.create(tmp_path, "20260102T000000000Z-bbbbbb", backend="local")
    b.record_resource("local_server", "srv")
    b.mark_deleted("local_server", "srv")
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == [a.run_id, b.run_id]
    assert [r.name for r in runs[0].alive_resources] == ["ep-a"]
    assert runs[0].to_dict()["billable_alive"] == 1
    assert runs[1].alive_resources == ()


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PHI_FINETUNE_STATE_DIR", raising=False)
    assert default_state_dir() == Path(".phi_finetune")
    monkeypatch.setenv("PHI_FINETUNE_STATE_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path


def test_a_failed_write_keeps_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal.create(tmp_path, "r", backend="azure")
    journal.record_resource("endpoint", "ep-1", state="creating")

    def broken_replace(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # as if interrupted between writing the temp file and renaming

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        journal.record_resource("endpoint", "ep-1", state="created")
    monkeypatch.undo()
    reloaded = Journal.load(tmp_path, "r")
    assert reloaded.resource("endpoint").state == "creating"  # type: ignore[union-attr]
    assert not list(journal.run_dir.glob("*.tmp"))
    assert (journal.run_dir / "journal.json").is_file()


_KILLER = textwrap.dedent(
    """
    import os, sys
    from phi_finetune.journal import Journal
    state_dir, run_id, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    journal = Journal.create(state_dir, run_id, backend="azure", config={"a": 1})
    writes = 0
    real_replace = os.replace
    def replace(src, dst):
        global writes
        writes += 1
        if writes == kill_at:
            os._exit(9)  # killed after the temp file is written, before the rename
        real_replace(src, dst)
    os.replace = replace
    journal.begin_step("deploy", {"instance_type": "Standard_NC6s_v3"})
    journal.record_resource("endpoint", "ep-1", state="creating")
    journal.record_resource("endpoint", "ep-1", state="created")
    journal.complete_step("deploy", {"endpoint_name": "ep-1"})
    """
)


@pytest.mark.parametrize(
    ("kill_at", "expected_step", "expected_endpoint"),
    [
        (1, "absent", None),
        (2, "running", None),
        (3, "running", "creating"),
        (4, "running", "created"),
        (5, "completed", "created"),
    ],
)
def test_a_killed_process_leaves_a_readable_journal(
    tmp_path: Path, kill_at: int, expected_step: str, expected_endpoint: str | None
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(tmp_path), "killed", str(kill_at)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == (9 if kill_at < 5 else 0), proc.stderr
    journal = Journal.load(tmp_path, "killed")
    step = journal.get_step("deploy")
    assert (step.status if step else "absent") == expected_step
    endpoint = journal.resource("endpoint")
    assert (endpoint.state if endpoint else None) == expected_endpoint
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600


def test_steps_are_listed_in_workflow_order_after_a_reload(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r1", backend="local")
    for step in ("prepare_data", "plan", "fine_tune", "register", "deploy", "score"):
        journal.begin_step(step)
        journal.complete_step(step, {})
    journal.begin_step("zz_custom")
    reloaded = Journal.load(tmp_path, "r1")
    # The file stores steps by name (alphabetically); the journal lists them as they run.
    assert list(reloaded.steps) == [
        "prepare_data",
        "plan",
        "fine_tune",
        "register",
        "deploy",
        "score",
        "zz_custom",
    ]


def test_a_run_whose_last_step_is_teardown_is_completed(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r1", backend="local")
    for step in ("prepare_data", "plan"):
        journal.begin_step(step)
        journal.complete_step(step, {})
    assert journal.status == "incomplete"
    journal.begin_step("teardown")
    assert journal.status == "running"
    journal.complete_step("teardown", {"deleted": []})
    assert journal.status == "completed" and journal.finished_at is None
    assert list_runs(tmp_path)[0].status == "completed"
    # Running a step again after the teardown makes the run incomplete again.
    journal.begin_step("plan")
    journal.complete_step("plan", {})
    assert journal.status == "incomplete"


def test_a_journal_from_a_newer_release_is_refused_with_a_fix(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r1", backend="local")
    data = json.loads(journal.path.read_text())
    journal.path.write_text(json.dumps({**data, "format": 3}))
    with pytest.raises(RunStateError, match="format 3 is not one this release reads"):
        Journal.load(tmp_path, "r1")
