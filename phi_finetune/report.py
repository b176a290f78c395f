"""A run's report: loss curves as a PNG and a short Markdown summary, from its journal.

::

    from phi_finetune.report import build_report

    report = build_report(run_id)   # state_dir: $PHI_FINETUNE_STATE_DIR, else .phi_finetune
    report.png        # <state_dir>/runs/<run_id>/report.png
    report.markdown   # <state_dir>/runs/<run_id>/report.md
    report.train_loss, report.eval_loss   # the plotted curves

Everything comes from the run's journal: the local backend records the training history in the
``fine_tune`` step's outputs; for an Azure run the metrics are fetched from the job's run history
(``JobHandle.metrics()``) when an ``ml_client`` is given, and the report says they are
unavailable otherwise. Both files are written atomically; matplotlib is imported only here, and
only its headless Agg canvas is used.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import attrs

from phi_finetune._atomic import atomic_write_bytes, atomic_write_text
from phi_finetune.constants import default_state_dir
from phi_finetune.errors import ConfigurationError, PhiFinetuneError
from phi_finetune.steps import (
    STEPS,
    JobRecord,
    ModelRef,
    PlanRecord,
    PreparedDataRecord,
    ScoreRecord,
    TrainingSummary,
)

if TYPE_CHECKING:
    from phi_finetune.journal import Journal

__all__ = ["MARKDOWN_NAME", "PNG_NAME", "RunReport", "build_report"]

logger = logging.getLogger(__name__)

PNG_NAME = "report.png"
MARKDOWN_NAME = "report.md"
#: Figure size in inches at :data:`_DPI` (800 x 450 pixels).
_FIGSIZE = (8.0, 4.5)
_DPI = 100
#: Metric names tried, in order, for an Azure job's training and evaluation loss.
TRAIN_LOSS_KEYS = ("loss", "train_loss", "training_loss", "train/loss")
EVAL_LOSS_KEYS = ("eval_loss", "validation_loss", "eval/loss", "val_loss")
_ENDPOINT_KINDS = ("endpoint", "deployment", "local_server")
_REPLY_CHARS = 500


@attrs.frozen
class RunReport:
    """What :func:`build_report` wrote, and the curves it plotted."""

    run_id: str
    backend: str
    png: Path
    """The loss curves (``report.png``)."""
    markdown: Path
    """The summary (``report.md``)."""
    summary: Mapping[str, Any] = attrs.field(repr=False)
    """The summary as JSON values (data, parameters, durations, model, endpoints, reply)."""
    train_steps: tuple[int, ...] = ()
    train_loss: tuple[float, ...] = ()
    eval_steps: tuple[int, ...] = ()
    eval_loss: tuple[float, ...] = ()
    metrics_note: str | None = None
    """Why there are no curves (``None`` when there are)."""

    @property
    def has_metrics(self) -> bool:
        return bool(self.train_loss or self.eval_loss)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "backend": self.backend,
            "png": str(self.png),
            "markdown": str(self.markdown),
            "summary": dict(self.summary),
            "train_steps": list(self.train_steps),
            "train_loss": list(self.train_loss),
            "eval_steps": list(self.eval_steps),
            "eval_loss": list(self.eval_loss),
            "metrics_note": self.metrics_note,
        }


@attrs.frozen
class _Curves:
    train_steps: tuple[int, ...] = ()
    train_loss: tuple[float, ...] = ()
    eval_steps: tuple[int, ...] = ()
    eval_loss: tuple[float, ...] = ()
    source: str = ""
    note: str | None = None


def build_report(
    run_id: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    ml_client: Any = None,
    journal: Journal | None = None,
) -> RunReport:
    """Write ``report.png`` and ``report.md`` for run ``run_id`` and return what they hold.

    Args:
        run_id: the run (``phi-finetune status`` lists them).
        state_dir: the folder the run's journal lives under (default: ``$PHI_FINETUNE_STATE_DIR``,
            else ``.phi_finetune``).
        out_dir: where to write the two files (default: the run's folder).
        ml_client: an ``azure.ai.ml.MLClient`` for the run's workspace; only used for Azure
            runs, to fetch the job's metrics. Without it an Azure report has no curves and
            says why.
        journal: an already open journal of the run (read from ``state_dir`` when omitted).

    Raises:
        RunStateError: the run is unknown or its journal is unreadable.
        ConfigurationError: ``out_dir`` cannot be written.
    """
    from phi_finetune.journal import Journal

    if journal is None:
        journal = Journal.load(state_dir if state_dir is not None else default_state_dir(), run_id)
    target = Path(out_dir).expanduser() if out_dir is not None else journal.run_dir
    curves = _curves(journal, ml_client)
    summary = _summary(journal, curves)
    png_path = target / PNG_NAME
    md_path = target / MARKDOWN_NAME
    summary["files"] = {"png": str(png_path), "markdown": str(md_path)}
    png = _render_png(journal.run_id, journal.backend, curves)
    try:
        atomic_write_bytes(png_path, png)
        atomic_write_text(md_path, _markdown(summary, curves))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the report of run {journal.run_id} to {target} (out_dir / --out): "
            f"{exc.strerror or exc}; pick a folder you can write to"
        ) from exc
    logger.info("run %s: report written to %s and %s", journal.run_id, png_path, md_path)
    return RunReport(
        run_id=journal.run_id,
        backend=journal.backend,
        png=png_path,
        markdown=md_path,
        summary=summary,
        train_steps=curves.train_steps,
        train_loss=curves.train_loss,
        eval_steps=curves.eval_steps,
        eval_loss=curves.eval_loss,
        metrics_note=curves.note,
    )


# ---------------------------------------------------------------------------------- curves


def _curves(journal: Journal, ml_client: Any) -> _Curves:
    if not journal.is_completed("fine_tune"):
        step = journal.get_step("fine_tune")
        state = "never ran" if step is None else f"is {step.status}"
        return _Curves(note=f"metrics unavailable: the fine_tune step {state}")
    job: JobRecord = journal.record_of("fine_tune")
    if job.training is not None:
        return _local_curves(job.training)
    if not job.name:
        return _Curves(note="metrics unavailable: the fine_tune step recorded no job name")
    if ml_client is None:
        return _Curves(
            note=(
                f"metrics unavailable: job {job.name}'s metrics live in the workspace; pass "
                "ml_client= (or `phi-finetune report --metrics`) to fetch them"
            )
        )
    return _job_curves(ml_client, job.name)


def _local_curves(training: TrainingSummary) -> _Curves:
    points = [
        (int(h["step"]), float(h["loss"]))
        for h in training.history
        if _number(h.get("step")) and _number(h.get("loss"))
    ]
    # Evaluations during training (evaluation_strategy) are in the history; else the final one.
    evaluated = [
        (int(h["step"]), float(h["eval_loss"]))
        for h in training.history
        if _number(h.get("step")) and _number(h.get("eval_loss"))
    ]
    eval_steps: tuple[int, ...] = tuple(p[0] for p in evaluated)
    eval_loss: tuple[float, ...] = tuple(p[1] for p in evaluated)
    if training.eval_loss is not None and not evaluated:
        at = training.steps if training.steps is not None else (points[-1][0] if points else 0)
        eval_steps, eval_loss = (at,), (float(training.eval_loss),)
    note = None if points or eval_loss else "no metrics: the training history is empty"
    return _Curves(
        train_steps=tuple(p[0] for p in points),
        train_loss=tuple(p[1] for p in points),
        eval_steps=eval_steps,
        eval_loss=eval_loss,
        source="the local training history (journal)",
        note=note,
    )


def _job_curves(ml_client: Any, job_name: str) -> _Curves:
    from phi_finetune.azure.job import JobHandle

    try:
        metrics = JobHandle.from_name(ml_client, job_name).metrics()
    except PhiFinetuneError as exc:
        return _Curves(note=f"metrics unavailable: {exc}")
    if not metrics.values:
        return _Curves(note=f"metrics unavailable: {metrics.reason or 'nothing was logged'}")
    train = _pick(metrics.values, TRAIN_LOSS_KEYS, evaluation=False)
    evaluation = _pick(metrics.values, EVAL_LOSS_KEYS, evaluation=True)
    if not train and not evaluation:
        names = ", ".join(sorted(metrics.values)) or "none"
        return _Curves(note=f"no loss metric among the job's metrics ({names})")
    return _Curves(
        train_steps=tuple(s for s, _ in train),
        train_loss=tuple(v for _, v in train),
        eval_steps=tuple(s for s, _ in evaluation),
        eval_loss=tuple(v for _, v in evaluation),
        source=f"job {job_name}'s run history (MLflow)",
    )


def _pick(
    values: Mapping[str, Sequence[tuple[int, float]]], keys: Sequence[str], *, evaluation: bool
) -> list[tuple[int, float]]:
    for key in keys:
        if values.get(key):
            return sorted((int(s), float(v)) for s, v in values[key])
    for key in sorted(values):
        lowered = key.lower()
        is_eval = "eval" in lowered or "val" in lowered
        if lowered.endswith("loss") and is_eval == evaluation and values[key]:
            return sorted((int(s), float(v)) for s, v in values[key])
    return []


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------- summary


def _summary(journal: Journal, curves: _Curves) -> dict[str, Any]:
    records = {name: journal.record_of(name) for name in STEPS if journal.is_completed(name)}
    prepared: PreparedDataRecord | None = records.get("prepare_data")
    plan: PlanRecord | None = records.get("plan")
    job: JobRecord | None = records.get("fine_tune")
    registered: ModelRef | None = records.get("register")
    score: ScoreRecord | None = records.get("score")
    parameters = plan.parameters if plan else {}
    chosen = {
        name: p.to_dict()
        for name, p in sorted(parameters.items())
        if p.source != "component default"
    }
    job_facts: dict[str, Any] = {}
    if job is not None:
        training = job.training
        job_facts = {
            "job_name": job.name,
            "status": job.status,
            "studio_url": job.studio_url,
            "device": training.device if training else None,
            "steps": training.steps if training else None,
            "tokens_trained": training.tokens_trained if training else None,
        }
    return {
        "run_id": journal.run_id,
        "backend": journal.backend,
        "status": journal.status,
        "created_at": journal.created_at,
        "finished_at": journal.finished_at,
        "data": {
            "counts": dict(prepared.counts) if prepared else {},
            "validation": prepared.validation.to_dict() if prepared else {},
        },
        "parameters": chosen,
        "parameters_at_component_default": len(parameters) - len(chosen),
        "display_name": plan.display_name if plan else None,
        "base_model": (
            {k: v for k, v in (("name", plan.model.name), ("version", plan.model.version)) if v}
            if plan
            else {}
        ),
        "job": {k: v for k, v in job_facts.items() if v is not None},
        "model": {"name": registered.name, "version": registered.version} if registered else None,
        "durations": _durations(journal),
        "endpoints": [
            {
                "kind": r.kind,
                "name": r.name,
                "status": "alive" if r.alive else "deleted",
                "scoring_uri": r.details.get("scoring_uri"),
            }
            for r in journal.resources()
            if r.kind in _ENDPOINT_KINDS
        ],
        "reply": score.reply if score else None,
        "metrics": {
            "source": curves.source or None,
            "train_points": len(curves.train_loss),
            "final_train_loss": curves.train_loss[-1] if curves.train_loss else None,
            "eval_loss": curves.eval_loss[-1] if curves.eval_loss else None,
            "note": curves.note,
        },
    }


def _durations(journal: Journal) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, step in journal.steps.items():  # workflow order
        seconds = step.outputs.get("seconds")
        wall = _elapsed(step.started_at, step.finished_at)
        out[name] = {
            "status": step.status,
            "seconds": float(seconds) if _number(seconds) else None,
            "wall_s": wall,
            "started_at": step.started_at,
            "finished_at": step.finished_at,
            "attempts": step.attempts,
        }
    return out


def _elapsed(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        delta = _dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)
    except ValueError:
        return None
    return round(delta.total_seconds(), 3)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _markdown(summary: Mapping[str, Any], curves: _Curves) -> str:
    lines = [
        f"# Run {summary['run_id']}",
        "",
        f"- backend: {summary['backend']}",
        f"- status: {summary['status']}",
        f"- started: {summary['created_at']}",
        f"- finished: {summary['finished_at'] or '-'}",
        "",
        "## Data",
        "",
    ]
    counts = summary["data"]["counts"]
    if counts:
        lines += ["| split | rows |", "|---|---|"]
        lines += [f"| {split} | {n} |" for split, n in counts.items()]
        validation = summary["data"]["validation"]
        lines += [
            "",
            f"Validation: {validation.get('errors', 0)} errors, "
            f"{validation.get('warnings', 0)} warnings, "
            f"{validation.get('rows_invalid', 0)} invalid rows.",
        ]
    else:
        lines.append("The data was not prepared in this run.")
    lines += ["", "## Parameters", ""]
    if summary["parameters"]:
        if summary.get("display_name"):
            lines += [f"Job display name: `{summary['display_name']}`", ""]
        lines += ["| parameter | value | source |", "|---|---|---|"]
        lines += [
            f"| {name} | {_fmt(p.get('value'))} | {_fmt(p.get('source'))} |"
            for name, p in summary["parameters"].items()
        ]
        lines += ["", f"{summary['parameters_at_component_default']} more at component defaults."]
    else:
        lines.append("No plan was recorded.")
    lines += ["", "## Training", ""]
    base = summary["base_model"]
    if base:
        lines.append(f"- base model: {base.get('name')} {base.get('version') or ''}".rstrip())
    for key, value in summary["job"].items():
        lines.append(f"- {key.replace('_', ' ')}: {_fmt(value)}")
    metrics = summary["metrics"]
    if curves.note:
        lines.append(f"- {curves.note}")
    else:
        lines.append(f"- loss curves from {metrics['source']} (report.png)")
        if metrics["final_train_loss"] is not None:
            lines.append(
                f"- training loss: {_fmt(curves.train_loss[0])} at step {curves.train_steps[0]}"
                f" -> {_fmt(metrics['final_train_loss'])} at step {curves.train_steps[-1]}"
            )
        if metrics["eval_loss"] is not None:
            lines.append(f"- evaluation loss: {_fmt(metrics['eval_loss'])}")
    lines += ["", "## Model", ""]
    model = summary["model"]
    lines.append(
        f"Registered as `{model['name']}` version {model['version']}."
        if model
        else "No model was registered."
    )
    lines += ["", "## Endpoint", ""]
    if summary["endpoints"]:
        lines += ["| kind | name | status |", "|---|---|---|"]
        lines += [
            f"| {e['kind']} | {_fmt(e['name'])} | {e['status']} |" for e in summary["endpoints"]
        ]
    else:
        lines.append("Never deployed.")
    reply = summary["reply"]
    if reply is not None:
        text = str(reply)
        if len(text) > _REPLY_CHARS:
            text = text[:_REPLY_CHARS] + " [...]"
        lines += ["", "Sample reply:", ""]
        lines += [f"> {line}" if line else ">" for line in text.splitlines() or [""]]
    lines += ["", "## Durations", "", "| step | status | seconds | wall (s) |", "|---|---|---|---|"]
    for name, d in summary["durations"].items():
        lines.append(f"| {name} | {d['status']} | {_fmt(d['seconds'])} | {_fmt(d['wall_s'])} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- plot


def _render_png(run_id: str, backend: str, curves: _Curves) -> bytes:
    """The loss curves as PNG bytes, drawn on matplotlib's headless Agg canvas (no pyplot, so
    no global backend switch and no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGSIZE, dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(f"run {run_id} ({backend})", fontsize=10)
    if curves.train_loss or curves.eval_loss:
        if curves.train_loss:
            axes.plot(
                curves.train_steps,
                curves.train_loss,
                marker="." if len(curves.train_loss) < 50 else None,
                label="training loss",
            )
        if curves.eval_loss:
            axes.plot(
                curves.eval_steps,
                curves.eval_loss,
                marker="o",
                linestyle="--" if len(curves.eval_loss) > 1 else "none",
                color="tab:orange",
                label="evaluation loss",
            )
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(True, alpha=0.3)
        axes.legend()
    else:
        axes.set_axis_off()
        axes.text(
            0.5,
            0.5,
            "no metrics\n" + _wrap(curves.note or ""),
            ha="center",
            va="center",
            transform=axes.transAxes,
            fontsize=10,
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _wrap(text: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
