"""``phi-finetune job status|stream|cancel JOB_NAME``: a submitted fine-tuning job.

``status`` prints the job's status, studio URL and output path; ``stream`` follows its logs
until it ends (Ctrl-C stops watching; the job keeps running); ``cancel`` cancels it.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "job",
        help="status, stream or cancel a submitted fine-tuning job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="job_action", metavar="ACTION")
    for name, handler, help_text in (
        ("status", _status, "print the job's status"),
        ("stream", _stream, "follow the job's logs until it ends"),
        ("cancel", _cancel, "cancel the job"),
    ):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("job_name", metavar="JOB_NAME")
        sub.set_defaults(handler=handler)
        _add_global_options(sub, suppress=True)
    parser.set_defaults(handler=_usage(parser))


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    from phi_finetune.cli.main import _add_global_options as add

    add(parser, suppress=suppress)


def _usage(parser: argparse.ArgumentParser) -> Any:
    def handler(args: Any) -> int:
        parser.print_usage()
        return 2

    return handler


def _ml_client(args: Any) -> Any:
    """The workspace client from ``--config`` (or the usual workspace search); tests replace it."""
    from phi_finetune.cli._common import workspace_for

    return workspace_for(args).ml_client


def _handle(args: Any) -> Any:
    from phi_finetune.azure.job import JobHandle

    return JobHandle.from_name(_ml_client(args), args.job_name)


def _describe(handle: Any, status: str) -> dict[str, Any]:
    return {
        "name": handle.name,
        "status": status,
        "studio_url": handle.studio_url,
        "trained_model": handle.trained_model_path,
    }


def _status(args: Any) -> int:
    from phi_finetune.cli._common import emit

    handle = _handle(args)
    info = _describe(handle, handle.status())
    text = "\n".join(f"{k}: {v}" for k, v in info.items() if v is not None)
    emit(args, info, text)
    return 0


def _stream(args: Any) -> int:
    from phi_finetune.cli._common import emit

    handle = _handle(args)
    status = handle.stream()
    emit(args, _describe(handle, status), f"{handle.name}: {status}")
    return 0


def _cancel(args: Any) -> int:
    from phi_finetune.cli._common import emit

    handle = _handle(args)
    handle.cancel()
    status = handle.status()
    text = f"{handle.name}: {status}"
    if str(status) == "CancelRequested":
        text += (
            " (the service is stopping the job's steps; "
            f"`phi-finetune job status {handle.name}` shows when it reads Canceled)"
        )
    emit(args, _describe(handle, status), text)
    return 0
