"""``phi-finetune teardown RUN_ID``: delete every billable resource a run created."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "teardown", help="delete every billable resource a run created (endpoints, servers)"
    )
    parser.add_argument("run_id")
    add_state_dir_option(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--delete-marketplace-subscription",
        action="store_true",
        help="serverless runs: also delete the model's marketplace subscription the run made",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.journal import Journal
    from phi_finetune.session import FineTuneSession

    journal = Journal.load(args.state_dir, args.run_id)
    alive = journal.resources(billable_only=True, alive_only=True)
    if journal.backend == "serverless":
        from phi_finetune.serverless.teardown import subscriptions_to_delete

        alive += subscriptions_to_delete(journal, flag=args.delete_marketplace_subscription)
    if not alive:
        emit(args, {"run_id": args.run_id, "deleted": []}, "nothing billable left to delete")
        return 0
    names = ", ".join(f"{r.kind} {r.name}" for r in alive)
    if not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write(f"would delete: {names}\nrefusing without --yes (not a terminal)\n")
            return 2
        answer = input(f"delete {names}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            sys.stderr.write("nothing deleted\n")
            return 1
    if journal.backend == "serverless" and args.delete_marketplace_subscription:
        from phi_finetune.serverless.teardown import teardown_with_subscription

        deleted = teardown_with_subscription(args.run_id, state_dir=args.state_dir)
    else:
        deleted = FineTuneSession.teardown_run(args.run_id, state_dir=args.state_dir)
    emit(args, {"run_id": args.run_id, "deleted": deleted}, "deleted: " + ", ".join(deleted))
    return 0
