"""``phi-finetune invoke``: score a deployed model.

Which endpoint:

- ``--endpoint NAME``: an Azure ML online endpoint; the scoring URI and key are read from the
  workspace (``get_keys``), so you need the workspace configuration and the listKeys permission.
- ``--run RUN_ID``: the endpoint (Azure) or local server recorded in that run's journal. Keys are
  never journaled: an Azure key is fetched from the workspace; a local server's key is read from
  the file its journal entry names (``details.key_file``) or from the environment variable it
  names (``details.key_env``).
- ``--scoring-uri URI``: any endpoint speaking the Azure scoring contract, no workspace needed.

``--chat`` sends the conversation to the OpenAI-compatible ``/v1/chat/completions`` route
(``--param`` names are OpenAI's: ``max_tokens``, ``temperature``, ``stop``...); ``--stream`` also
prints the reply as it is generated. Where the endpoint lacks the route, ``/score`` is used.

``--key-env VAR`` takes the key from environment variable ``VAR`` instead (never pass a key on
the command line: it ends up in shell history and process lists).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi_finetune.cli._common import (
    add_state_dir_option,
    emit,
    resolve_state_dir,
    say,
    workspace_for,
)

if TYPE_CHECKING:
    from phi_finetune.endpoint import Endpoint

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help="score a deployed model (Azure endpoint, a run's endpoint, or a local server)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", metavar="NAME", help="Azure ML online endpoint name")
    target.add_argument("--run", metavar="RUN_ID", help="the endpoint recorded in a run's journal")
    target.add_argument("--scoring-uri", metavar="URI", help="score this URI directly")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--message", metavar="TEXT", help="one user message")
    what.add_argument(
        "--file",
        metavar="FILE",
        help="a scoring request (sample_score.json), a JSON list of messages, "
        "or an UltraChat record",
    )
    parser.add_argument("--system", metavar="TEXT", help="a system message before --message")
    parser.add_argument("--deployment", metavar="NAME", help="pin a deployment (default: live one)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="generation parameter (VALUE parsed as JSON), e.g. --param max_new_tokens=50",
    )
    parser.add_argument("--key-env", metavar="VAR", help="read the endpoint key from $VAR")
    route = parser.add_mutually_exclusive_group()
    route.add_argument(
        "--chat",
        action="store_true",
        help="use the OpenAI-compatible /v1/chat/completions route (OpenAI parameter names, "
        "e.g. --param max_tokens=50; falls back to /score where the endpoint lacks it)",
    )
    route.add_argument(
        "--stream",
        action="store_true",
        help="like --chat, printing the reply as it is generated",
    )
    add_state_dir_option(parser)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.set_defaults(handler=run_invoke)


def _parameters(pairs: list[str]) -> dict[str, Any]:
    from phi_finetune.errors import ConfigurationError

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(
                f"--param {pair!r} is not NAME=VALUE; e.g. --param temperature=0.2", key="--param"
            )
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw
    return out


def _key_from_env(var: str) -> str:
    from phi_finetune.constants import env_value
    from phi_finetune.errors import ConfigurationError

    value = env_value(var)
    if not value:
        raise ConfigurationError(
            f"--key-env {var}: the environment variable is empty or not set; export the "
            "endpoint key in it",
            key="--key-env",
        )
    return value


def _ml_client(args: Any) -> Any:
    """The workspace ``MLClient`` (tests replace it)."""
    return workspace_for(args).ml_client


def endpoint_for(args: Any) -> Endpoint:
    """Build the :class:`Endpoint` the arguments point at (no request is sent yet)."""
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.errors import RunStateError

    options: dict[str, Any] = {"timeout_s": args.timeout}
    if args.scoring_uri:
        key = _key_from_env(args.key_env) if args.key_env else None
        name = args.endpoint or "endpoint"
        return Endpoint(name, args.scoring_uri, key, deployment_name=args.deployment, **options)
    if args.endpoint:
        endpoint = Endpoint.from_name(
            _ml_client(args), args.endpoint, deployment_name=args.deployment
        )
        if args.key_env:
            endpoint = Endpoint(
                endpoint.name,
                endpoint.scoring_uri,
                _key_from_env(args.key_env),
                deployment_name=endpoint.deployment_name,
                **options,
            )
        return endpoint

    from phi_finetune.journal import Journal

    state_dir = resolve_state_dir(args)
    journal = Journal.load(state_dir, args.run)
    for kind in ("endpoint", "local_server"):
        record = journal.resource(kind)
        if record is None:
            continue
        if not record.alive:
            raise RunStateError(
                f"run {args.run}: its {kind.replace('_', ' ')} {record.name!r} was deleted "
                f"({record.updated_at}); deploy again with `phi-finetune resume {args.run}`"
            )
        details = dict(record.details)
        deployment = args.deployment or details.get("deployment") or _deployment_of(journal)
        if kind == "endpoint" and journal.backend == "serverless":
            from phi_finetune.serverless.endpoint import ServerlessEndpointHandle

            uri = details.get("scoring_uri")
            if args.key_env and uri:
                return ServerlessEndpointHandle(
                    record.name, str(uri), _key_from_env(args.key_env), **options
                )
            return ServerlessEndpointHandle.from_serverless(
                _ml_client(args), record.name, **options
            )
        if kind == "endpoint" and journal.backend == "azure":
            if args.key_env:
                uri = details.get("scoring_uri")
                if uri:
                    return Endpoint(
                        record.name,
                        str(uri),
                        _key_from_env(args.key_env),
                        deployment_name=deployment,
                        **options,
                    )
            return Endpoint.from_name(_ml_client(args), record.name, deployment_name=deployment)
        uri = details.get("scoring_uri")
        if not uri:
            raise RunStateError(
                f"run {args.run}: the journal records {kind} {record.name!r} without a "
                "scoring_uri; pass --scoring-uri URI --key-env VAR"
            )
        key = _local_key(args, details)
        return Endpoint(record.name, str(uri), key, deployment_name=deployment, **options)
    raise RunStateError(
        f"run {args.run} has no endpoint in its journal (last completed step: "
        f"{journal.last_completed_step}); deploy it with `phi-finetune resume {args.run}`"
    )


def _deployment_of(journal: Any) -> str | None:
    record = journal.resource("deployment")
    return None if record is None else str(record.name)


def _local_key(args: Any, details: dict[str, Any]) -> str | None:
    from phi_finetune.errors import RunStateError

    if args.key_env:
        return _key_from_env(args.key_env)
    key_file = details.get("key_file")
    if key_file:
        try:
            return Path(str(key_file)).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RunStateError(
                f"cannot read the local server's key file {key_file}: {exc.strerror}; "
                "pass --key-env VAR with the key in $VAR"
            ) from exc
    key_env = details.get("key_env")
    if key_env:
        from phi_finetune.constants import env_value

        return env_value(str(key_env)) or None
    return None


def run_invoke(args: Any) -> int:
    parameters = _parameters(args.param)
    endpoint = endpoint_for(args)
    say(args, f"scoring {endpoint.name} ({endpoint.deployment_name or 'default deployment'})")
    messages: list[dict[str, str]] = []
    if args.file and (args.chat or args.stream):
        from phi_finetune.endpoint import request_from_file

        messages = list(request_from_file(args.file)["input_data"]["input_string"][0])
    elif not args.file:
        if args.system:
            messages.append({"role": "system", "content": args.system})
        messages.append({"role": "user", "content": args.message})
    if args.stream and not getattr(args, "json", False):
        import sys

        for piece in endpoint.stream(messages, **parameters):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    if args.stream or args.chat:
        result = endpoint.chat(messages, **parameters)
    elif args.file:
        result = endpoint.invoke_file(args.file, **parameters)
    else:
        result = endpoint.invoke(messages, **parameters)
    emit(
        args,
        {
            "endpoint": endpoint.name,
            "deployment": endpoint.deployment_name,
            "shape": result.shape,
            "outputs": list(result.outputs),
            "text": result.text,
        },
        text="\n\n".join(result.outputs),
    )
    return 0
