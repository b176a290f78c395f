"""``phi-finetune status [RUN_ID]``: runs and what each still holds."""

from __future__ import annotations

import argparse
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="list runs, or show one run's steps and resources"
    )
    parser.add_argument("run_id", nargs="?", help="a run id (default: list every run)")
    add_state_dir_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.journal import Journal, list_runs

    if args.run_id is None:
        runs = list_runs(args.state_dir)
        rows = [run.to_dict() for run in runs]
        if not rows:
            emit(args, [], f"no runs under {args.state_dir}")
            return 0
        text = "\n".join(
            f"{run.run_id}  {run.backend:6} {run.status:10} "
            f"last step: {run.last_completed_step or '-':13} still holds: "
            + (", ".join(f"{r.kind} {r.name}" for r in run.billable_alive) or "nothing billable")
            for run in runs
        )
        emit(args, rows, text)
        return 0
    journal = Journal.load(args.state_dir, args.run_id)
    data = journal.to_dict()
    lines = [f"run {journal.run_id} ({journal.backend})"]
    for name, step in journal.steps.items():
        lines.append(f"  {name:13} {step.status}")
    for res in data.get("resources", []):
        extra = " (billable)" if res.get("billable") else ""
        version = f":{res['version']}" if res.get("version") else ""
        lines.append(f"  {res['kind']:13} {res['name']}{version} {res['state']}{extra}")
    emit(args, data, "\n".join(lines))
    return 0
