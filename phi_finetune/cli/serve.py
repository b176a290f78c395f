"""``phi-finetune serve MODEL_URI [--port N]``: serve a registered model on 127.0.0.1.

Runs the local endpoint in the foreground until Ctrl-C. The key comes from the
``PHI_FINETUNE_SERVER_KEY`` environment variable; when it is not set a random key is made and
printed once (to stdout, never to a log) so you can call the endpoint.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a registered model (or a model folder) locally with the Azure scoring contract",
        description=(
            "Serve MODEL_URI (models:/NAME@ALIAS, models:/NAME/VERSION or a model folder) on "
            "http://127.0.0.1:PORT/score and the OpenAI-compatible "
            "http://127.0.0.1:PORT/v1/chat/completions until Ctrl-C. Send the key as "
            "'Authorization: Bearer <key>' (the openai client does, given api_key)."
        ),
    )
    parser.add_argument("model_uri", metavar="MODEL_URI")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store holding the registered model (e.g. sqlite:///.phi_finetune/mlflow.db); "
        "default: $MLFLOW_TRACKING_URI",
    )
    parser.add_argument("--max-new-tokens-limit", type=int, default=None, metavar="N")
    parser.add_argument("--max-body-bytes", type=int, default=None, metavar="N")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=None,
        metavar="MS",
        help="how long concurrent requests are collected into one batch (default: 5)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        metavar="N",
        help="the most conversations generated together; 1 turns batching off (default: 32)",
    )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``phi-finetune serve``."""
    from phi_finetune.constants import mlflow_tracking_uri
    from phi_finetune.errors import ConfigurationError
    from phi_finetune.local import server

    if not 0 <= args.port <= 65535:
        raise ConfigurationError(f"--port must be in 0..65535, got {args.port}", key="port")
    window = (
        server.DEFAULT_BATCH_WINDOW_MS if args.batch_window_ms is None else args.batch_window_ms
    )
    if not 0 <= window <= 1000:
        raise ConfigurationError(
            f"--batch-window-ms must be in 0..1000, got {window:g}", key="batch_window_ms"
        )
    batch_size = (
        server.DEFAULT_MAX_BATCH_SIZE if args.max_batch_size is None else args.max_batch_size
    )
    if not 1 <= batch_size <= 256:
        raise ConfigurationError(
            f"--max-batch-size must be in 1..256, got {batch_size}", key="max_batch_size"
        )
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    key = os.environ.pop(server.KEY_ENV, "")
    generated = not key
    if generated:
        key = secrets.token_urlsafe(32)
    tracking_uri = args.tracking_uri or mlflow_tracking_uri()

    def announce(port: int) -> None:
        sys.stdout.write(f"scoring URI: http://{server.HOST}:{port}/score\n")
        sys.stdout.write(f"OpenAI base URL: http://{server.HOST}:{port}/v1\n")
        if generated:
            sys.stdout.write(f"key: {key}\n")
        else:
            sys.stdout.write(f"key: from ${server.KEY_ENV}\n")
        sys.stdout.write("press Ctrl-C to stop\n")
        sys.stdout.flush()

    server.run_server(
        args.model_uri,
        key=key,
        port=args.port,
        tracking_uri=tracking_uri,
        max_body_bytes=args.max_body_bytes or server.DEFAULT_MAX_BODY_BYTES,
        max_new_tokens_limit=args.max_new_tokens_limit or server.DEFAULT_MAX_NEW_TOKENS,
        on_ready=announce,
        batch_window_ms=window,
        max_batch_size=batch_size,
    )
    return 0
