"""``phi-finetune report RUN_ID``: a run's loss curves (PNG) and summary (Markdown).

Written to the run's folder (or ``--out``). A local run's curves come from its journal; an Azure
run's are fetched from the job's run history with ``--metrics`` (which signs in to the
workspace of ``--config``, else of the run's configuration).
"""

from __future__ import annotations

import argparse
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit, workspace_for

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write a run's loss curves (report.png) and summary (report.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run (see `phi-finetune status`)")
    add_state_dir_option(parser)
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="folder for the files (default: the run's)"
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="Azure runs: fetch the job's metrics from the workspace (needs a sign-in)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.journal import Journal
    from phi_finetune.report import build_report

    journal = Journal.load(args.state_dir, args.run_id)
    ml_client = None
    if args.metrics and journal.backend == "azure":
        ml_client = _ml_client(args, journal)
    report = build_report(
        journal.run_id,
        state_dir=args.state_dir,
        out_dir=args.out,
        ml_client=ml_client,
        journal=journal,
    )
    lines = [f"report of run {report.run_id} ({report.backend})", f"  curves:  {report.png}"]
    lines.append(f"  summary: {report.markdown}")
    if report.metrics_note:
        lines.append(f"  note: {report.metrics_note}")
    elif report.train_loss:
        lines.append(
            f"  training loss {report.train_loss[0]:.4g} -> {report.train_loss[-1]:.4g} "
            f"over {len(report.train_loss)} points"
            + (f", evaluation loss {report.eval_loss[-1]:.4g}" if report.eval_loss else "")
        )
    emit(args, report.to_dict(), "\n".join(lines))
    return 0


def _ml_client(args: argparse.Namespace, journal: Any) -> Any:
    """The workspace client from ``--config``, else from the run's configuration (tests
    replace it)."""
    return workspace_for(args, journal=journal).ml_client
