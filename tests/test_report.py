"""Run reports: ``build_report``, ``FineTuneSession.report()`` and ``phi-finetune report``.

The local-run tests share one real run (a copy of the session's shared run, see
tests/_local_runs.py: the tiny test model trained for ``MAX_STEPS`` steps on CPU, registered here);
the Azure tests use hand-written journals and a stub job handle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _local_runs import MAX_STEPS

from phi_finetune.azure.job import JobHandle, JobMetrics
from phi_finetune.cli.main import main as cli
from phi_finetune.errors import RunStateError
from phi_finetune.journal import Journal
from phi_finetune.report import RunReport, build_report
from phi_finetune.session import FineTuneSession
from phi_finetune.steps import (
    JobRecord,
    ModelRef,
    PlannedModel,
    PlanParameter,
    PlanRecord,
    PreparedDataRecord,
    ScoreRecord,
    ValidationSummary,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_SHAPE = (450, 800)


@pytest.fixture(scope="module")
def local_run(
    shared_trained_run: tuple[Journal, Path], tmp_path_factory: pytest.TempPathFactory
) -> FineTuneSession:
    """A registered local run: this module's copy of the session's shared trained run."""
    from _local_runs import copy_trained_run

    session: FineTuneSession = copy_trained_run(
        *shared_trained_run, tmp_path_factory.mktemp("local-run")
    )
    session.register()
    return session


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[:2] == PNG_SHAPE


def _azure_journal(state_dir: Path, run_id: str = "azure-run-1") -> Journal:
    journal = Journal.create(state_dir, run_id, backend="azure", config={"backend": "azure"})

    def complete(step: str, record: Any, seconds: float) -> None:
        journal.begin_step(step)
        journal.complete_step(step, {**record.to_dict(), "seconds": seconds})

    complete(
        "prepare_data",
        PreparedDataRecord(
            out_dir="data",
            files={"train": "data/train.jsonl", "test": "data/test.jsonl"},
            counts={"train": 1200, "test": 300},
            validation=ValidationSummary(errors=0, warnings=3, rows_invalid=2),
        ),
        4.5,
    )
    parameters = {
        "num_train_epochs": PlanParameter(2, "user", "integer"),
        "adam_beta1": PlanParameter(0.9, "component default", "number"),
    }
    complete(
        "plan",
        PlanRecord(
            model=PlannedModel(name="Phi-3-mini-4k-instruct", version="15"),
            parameters=parameters,
            display_name="phi3-ultrachat",
            table="(table)",
        ),
        1.0,
    )
    journal.begin_step("fine_tune")
    journal.record_resource("job", "job-abc", billable=False)
    journal.complete_step(
        "fine_tune", {**JobRecord(name="job-abc", status="Completed").to_dict(), "seconds": 3600.0}
    )
    complete(
        "register",
        ModelRef(name="phi3-ultrachat", version="7", uri="azureml:phi3-ultrachat:7"),
        2.0,
    )
    journal.record_resource("endpoint", "ep-abc", details={"scoring_uri": "https://x/score"})
    journal.mark_deleted("endpoint", "ep-abc")
    complete(
        "score",
        ScoreRecord(
            request={}, request_file="sample_score.json", reply="Hello | there\nsecond line"
        ),
        0.5,
    )
    return journal


# ------------------------------------------------------------------------------ local run


@pytest.mark.slow
def test_local_report_png_and_curves_match_the_journal(
    local_run: FineTuneSession, tmp_path: Path
) -> None:
    report = build_report(local_run.run_id, state_dir=local_run.state_dir, out_dir=tmp_path)
    assert isinstance(report, RunReport)
    assert report.png == tmp_path / "report.png" and report.markdown == tmp_path / "report.md"
    _check_png(report.png)

    job = Journal.load(local_run.state_dir, local_run.run_id).record_of("fine_tune")
    assert isinstance(job, JobRecord) and job.training is not None
    history = job.training.history
    assert len(history) == MAX_STEPS
    assert report.train_steps == tuple(h["step"] for h in history)
    assert report.train_loss == tuple(h["loss"] for h in history)
    assert report.eval_loss == (job.training.eval_loss,)
    assert report.eval_steps == (MAX_STEPS,)
    assert report.metrics_note is None and report.has_metrics
    assert report.summary["metrics"]["final_train_loss"] == history[-1]["loss"]


@pytest.mark.slow
def test_local_report_markdown_has_counts_parameters_durations(
    local_run: FineTuneSession, tmp_path: Path
) -> None:
    report = build_report(local_run.run_id, state_dir=local_run.state_dir, out_dir=tmp_path)
    text = report.markdown.read_text(encoding="utf-8")
    journal = Journal.load(local_run.state_dir, local_run.run_id)
    counts = journal.record_of("prepare_data").counts
    for split, rows in counts.items():
        assert f"| {split} | {rows} |" in text
    assert "Validation: 0 errors, 0 warnings" in text
    parameters = journal.record_of("plan").parameters
    for name in ("learning_rate", "num_train_epochs", "lora_r"):
        assert parameters[name].source == "user"
        assert f"| {name} | {parameters[name].value:.4g} | user |" in text
    assert "component defaults" in text
    register = journal.record_of("register")
    assert f"`{register.name}` version {register.version}" in text
    assert "Never deployed." in text
    durations = report.summary["durations"]
    assert list(durations) == ["prepare_data", "plan", "fine_tune", "register"]
    assert durations["fine_tune"]["seconds"] == journal.outputs_of("fine_tune")["seconds"]
    assert durations["fine_tune"]["wall_s"] >= 0
    assert "| fine_tune | completed |" in text
    assert report.summary["data"]["counts"] == counts


@pytest.mark.slow
def test_session_report_defaults_to_the_run_folder(local_run: FineTuneSession) -> None:
    report = local_run.report()
    assert report.png == local_run.run_dir / "report.png"
    assert report.markdown.is_file()
    _check_png(report.png)
    assert report.run_id == local_run.run_id and report.backend == "local"


@pytest.mark.slow
def test_cli_report_json(
    local_run: FineTuneSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code = cli(
        [
            "report",
            local_run.run_id,
            "--state-dir",
            str(local_run.state_dir),
            "--out",
            str(out_dir),
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["png"] == str(out_dir / "report.png")
    assert len(data["train_loss"]) == MAX_STEPS and data["metrics_note"] is None
    _check_png(out_dir / "report.png")


# ------------------------------------------------------------------------------ azure runs


def test_azure_report_without_client_says_metrics_unavailable(tmp_path: Path) -> None:
    _azure_journal(tmp_path)
    report = build_report("azure-run-1", state_dir=tmp_path)
    assert not report.has_metrics and report.train_loss == ()
    assert report.metrics_note is not None and "metrics unavailable" in report.metrics_note
    assert "job-abc" in report.metrics_note and "ml_client" in report.metrics_note
    _check_png(report.png)  # still drawn, with a 'no metrics' note
    text = report.markdown.read_text(encoding="utf-8")
    assert "metrics unavailable" in text
    assert "| train | 1200 |" in text and "| test | 300 |" in text
    assert "0 errors, 3 warnings, 2 invalid rows" in text
    assert "| num_train_epochs | 2 | user |" in text and "adam_beta1" not in text
    assert "1 more at component defaults." in text
    assert "base model: Phi-3-mini-4k-instruct 15" in text
    assert "`phi3-ultrachat` version 7" in text
    assert "| endpoint | ep-abc | deleted |" in text
    assert "> Hello | there" in text and "> second line" in text
    assert report.summary["endpoints"][0]["status"] == "deleted"
    assert report.summary["durations"]["fine_tune"]["seconds"] == 3600.0


def test_azure_report_with_client_plots_the_job_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _azure_journal(tmp_path)
    attached: list[tuple[Any, str]] = []

    class StubHandle:
        def metrics(self) -> JobMetrics:
            return JobMetrics(
                values={
                    "loss": ((20, 1.5), (10, 2.0), (30, 1.2)),
                    "eval_loss": ((30, 1.4),),
                    "learning_rate": ((10, 1e-5),),
                }
            )

    def from_name(ml_client: Any, job_name: str) -> StubHandle:
        attached.append((ml_client, job_name))
        return StubHandle()

    monkeypatch.setattr(JobHandle, "from_name", staticmethod(from_name))
    client = object()
    report = build_report("azure-run-1", state_dir=tmp_path, ml_client=client)
    assert attached == [(client, "job-abc")]
    assert report.train_steps == (10, 20, 30) and report.train_loss == (2.0, 1.5, 1.2)
    assert report.eval_steps == (30,) and report.eval_loss == (1.4,)
    assert report.metrics_note is None
    _check_png(report.png)
    assert "run history" in report.markdown.read_text(encoding="utf-8")


def test_azure_report_when_the_service_has_no_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _azure_journal(tmp_path)

    class StubHandle:
        def metrics(self) -> JobMetrics:
            return JobMetrics(reason="the workspace has no MLflow tracking URI")

    monkeypatch.setattr(JobHandle, "from_name", staticmethod(lambda client, name: StubHandle()))
    report = build_report("azure-run-1", state_dir=tmp_path, ml_client=object())
    assert report.metrics_note is not None and "no MLflow tracking URI" in report.metrics_note
    _check_png(report.png)


def test_report_of_a_run_that_never_trained(tmp_path: Path) -> None:
    Journal.create(tmp_path, "empty-run", backend="local")
    report = build_report("empty-run", state_dir=tmp_path)
    assert report.metrics_note == "metrics unavailable: the fine_tune step never ran"
    _check_png(report.png)
    text = report.markdown.read_text(encoding="utf-8")
    assert "The data was not prepared" in text and "No model was registered." in text


def test_unknown_run_raises(tmp_path: Path) -> None:
    with pytest.raises(RunStateError, match="no run 'nope'"):
        build_report("nope", state_dir=tmp_path)


def test_cli_unknown_run_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["report", "nope", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error: no run 'nope'" in err and "phi-finetune status" in err


def test_cli_report_text_for_an_azure_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _azure_journal(tmp_path)
    assert cli(["report", "azure-run-1", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report.png" in out and "report.md" in out and "metrics unavailable" in out


def test_cli_metrics_flag_uses_the_workspace_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import phi_finetune.cli.report as report_cli

    _azure_journal(tmp_path)
    client = object()
    seen: list[Any] = []

    class StubHandle:
        def metrics(self) -> JobMetrics:
            return JobMetrics(values={"train_loss": ((1, 3.0), (2, 2.5))})

    def from_name(ml_client: Any, job_name: str) -> StubHandle:
        seen.append(ml_client)
        return StubHandle()

    monkeypatch.setattr(report_cli, "_ml_client", lambda args, journal: client)
    monkeypatch.setattr(JobHandle, "from_name", staticmethod(from_name))
    code = cli(["report", "azure-run-1", "--state-dir", str(tmp_path), "--metrics", "--json"])
    assert code == 0 and seen == [client]
    assert json.loads(capsys.readouterr().out)["train_loss"] == [3.0, 2.5]


def test_unwritable_out_dir_is_a_clear_error(tmp_path: Path) -> None:
    from phi_finetune.errors import ConfigurationError

    _azure_journal(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="cannot write the report"):
        build_report("azure-run-1", state_dir=tmp_path, out_dir=blocker / "sub")
