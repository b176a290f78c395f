"""``phi-finetune rollout start|step|finish|rollback|status RUN_ID``: a safe rollout of a new
model version on a run's endpoint (see :mod:`phi_finetune.azure.rollout`)."""

from __future__ import annotations

import argparse
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit, say


def _percentages(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of percentages such as 10,50,100"
        ) from None


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rollout",
        help="roll a new model version out on a run's endpoint in traffic steps, or back",
        description=(
            "A second deployment for a new model version under the run's endpoint, traffic "
            "shifted in steps, then the old deployment deleted. Every stage is journaled in the "
            "run; a killed command continues with `rollout finish RUN_ID`."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start", help="journal the plan and create the new deployment with 0%% live traffic"
    )
    start.add_argument("run_id")
    start.add_argument("--model", required=True, help="the new version: azureml:NAME:VERSION")
    start.add_argument(
        "--deployment", help="the new deployment's name (default: deploy-v<model version>)"
    )
    start.add_argument("--old-deployment", help="the deployment to replace (default: the live one)")
    start.add_argument(
        "--steps",
        type=_percentages,
        default=(10, 50, 100),
        help="live traffic percentages for the new deployment, one stage each (default 10,50,100)",
    )
    start.add_argument(
        "--mirror",
        type=int,
        default=0,
        metavar="PERCENT",
        help="mirror this share of live traffic to the new deployment first (0-50, shadow test)",
    )
    start.add_argument("--instance-type", help="VM size (default: the old deployment's)")
    start.add_argument("--keep-old", action="store_true", help="do not delete the old deployment")
    start.add_argument(
        "--all", action="store_true", help="run every stage now instead of stopping at 0%%"
    )
    for name, text in (
        ("step", "run the next stage (next traffic step, or delete the old deployment)"),
        ("finish", "run every stage left (also completes an interrupted rollback)"),
        ("rollback", "all traffic back to the old deployment; delete the new one"),
        ("status", "show the stages and the traffic, from the journal (no Azure request)"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("run_id")
    for sub in actions.choices.values():
        add_state_dir_option(sub)
        sub.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.azure.rollout import RolloutStatus

    status = _status_offline(args) if args.action == "status" else _act(args)
    assert isinstance(status, RolloutStatus)
    emit(args, {"run_id": args.run_id, **status.to_dict()}, str(status))
    return 0


def _status_offline(args: argparse.Namespace) -> Any:
    from phi_finetune.azure.rollout import journaled_status
    from phi_finetune.journal import Journal

    return journaled_status(Journal.load(args.state_dir, args.run_id))


def _act(args: argparse.Namespace) -> Any:
    from phi_finetune.session import FineTuneSession

    session = FineTuneSession.resume(args.run_id, state_dir=args.state_dir)
    if args.action == "start":
        settings: dict[str, Any] = {}
        if args.instance_type:
            settings["instance_type"] = args.instance_type
        rollout = session.rollout(
            args.model,
            deployment_name=args.deployment,
            old_deployment=args.old_deployment,
            steps=args.steps,
            mirror_percent=args.mirror,
            delete_old=not args.keep_old,
            **settings,
        )
        say(args, f"rollout on run {session.run_id}: {rollout.status().stages[0]}")
        return rollout.finish() if args.all else rollout.start()
    rollout = session.rollout()
    say(args, f"rollout on run {session.run_id}: {args.action}")
    if args.action == "step":
        return rollout.step()
    if args.action == "finish":
        return rollout.finish()
    return rollout.rollback()
