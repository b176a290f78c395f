"""``phi-finetune resume RUN_ID``: continue a run from its last completed step."""

from __future__ import annotations

import argparse
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit, say


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "resume", help="continue a run from its journal (reattaches, never duplicates)"
    )
    parser.add_argument("run_id")
    add_state_dir_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.cli.run import summary_dict, summary_text
    from phi_finetune.session import FineTuneSession

    session = FineTuneSession.resume(args.run_id, state_dir=args.state_dir)
    say(args, f"resuming run {session.run_id} after step {session.journal.last_completed_step}")
    result = session.run()
    emit(args, summary_dict(result), summary_text(result))
    return 0
