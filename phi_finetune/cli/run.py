"""``phi-finetune run``: the whole workflow from a configuration file."""

from __future__ import annotations

import argparse
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit, say


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the whole workflow (prepare, plan, fine-tune, register, deploy, score, teardown)",
        description="Run the whole workflow from a configuration file, journaling every step.",
    )
    parser.add_argument(
        "--backend",
        choices=("azure", "local", "serverless"),
        help="override the config's backend",
    )
    add_state_dir_option(parser)
    parser.add_argument(
        "--keep-endpoint", action="store_true", help="leave the endpoint running at the end"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import attrs

    from phi_finetune.config import RunConfig, load_run_config
    from phi_finetune.session import FineTuneSession

    config = load_run_config(args.config) if args.config else RunConfig()
    if args.keep_endpoint:
        config = attrs.evolve(config, deploy=attrs.evolve(config.deploy, keep_endpoint=True))
    session = FineTuneSession.from_config(config, backend=args.backend, state_dir=args.state_dir)
    say(
        args, f"run {session.run_id} ({session.backend.name} backend), journal in {session.run_dir}"
    )
    result = session.run()
    emit(args, summary_dict(result), summary_text(result))
    return 0


def summary_dict(result: Any) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "backend": result.backend,
        "run_dir": str(result.run_dir),
        "job_name": result.job_name,
        "model": None if result.model is None else str(result.model),
        "endpoint": result.endpoint_name,
        "reply": result.reply,
        "steps": result.to_dict(),
    }


def summary_text(result: Any) -> str:
    lines = [
        f"run:      {result.run_id} ({result.backend})",
        f"job:      {result.job_name}",
        f"model:    {result.model}",
        f"endpoint: {result.endpoint_name}",
    ]
    if result.reply is not None:
        lines.append(f"reply:    {result.reply}")
    return "\n".join(lines)
