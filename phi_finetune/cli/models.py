"""``phi-finetune models``: the fine-tunable chat-completion models and their facts.

Without ``--offline`` each catalogued model is read from its registry (``--config`` or the
environment name the workspace); a model the registry does not answer for keeps its pinned
facts, marked as such. ``--offline`` shows the pinned catalogue only, with the source file and
date of every entry. ``--all`` includes retired models.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

__all__ = ["models_table", "register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "models",
        help="list fine-tunable chat-completion models (lifecycle, allow lists, context)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--offline", action="store_true", help="pinned facts only (no Azure)")
    parser.add_argument("--all", action="store_true", help="include retired models")
    parser.set_defaults(handler=handle)


def _live_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each model's facts read from its registry where it answers."""
    from phi_finetune.azure.foundation_model import resolve_foundation_model
    from phi_finetune.cli._common import workspace_for
    from phi_finetune.errors import ModelNotFoundError, ModelRetiredError, PhiFinetuneError

    workspace = workspace_for(args)
    out = []
    for row in rows:
        try:
            model = resolve_foundation_model(
                workspace.registry_client_for(row["registry"]),
                row["name"],
                allow_retired=True,
                registry=row["registry"],
            )
        except (ModelNotFoundError, ModelRetiredError, PhiFinetuneError) as exc:
            # Not found, or no access to that registry: keep the pinned facts, say why.
            out.append({**row, "live_error": str(exc).splitlines()[0]})
            continue
        live = model.to_dict()
        out.append(
            {
                **row,
                "version": live["version"],
                "archived": live["archived"],
                "finetune_allow_list": live["finetune_allow_list"],
                "inference_allow_list": live["inference_allow_list"],
                "context_length": live["context_length"] or row["context_length"],
                "model_specific_defaults": live["model_specific_defaults"],
                "source": f"live registry {row['registry']}",
            }
        )
    return out


def models_table(rows: list[dict[str, Any]]) -> str:
    """The rows as text: one block per model."""
    lines: list[str] = []
    for row in rows:
        lines.append(
            f"{row['name']} {row['version'] or '(version not pinned)'}  [{row['lifecycle']}]"
        )
        lines.append(f"  registry        {row['registry']}")
        lines.append(f"  context         {row['context_length'] or 'unknown'} tokens")
        for key, label in (
            ("finetune_allow_list", "fine-tune on"),
            ("inference_allow_list", "deploy on"),
        ):
            sizes = row[key]
            lines.append(f"  {label:15} {', '.join(sizes) if sizes else 'not published'}")
        stage = row["model_specific_defaults"].get("deepspeed_stage")
        if stage is not None:
            lines.append(f"  deepspeed_stage {stage} (model default)")
        pinned = row["pinned_from"]
        where = f"{pinned['repo']} {pinned['path']} @ {pinned['commit'][:10]} ({pinned['date']})"
        lines.append(
            f"  facts from      {row['source']}"
            + ("" if row["source"] != "pinned" else f": {where}")
        )
        if row.get("live_error"):
            lines.append(f"  registry said   {row['live_error']}")
        if row.get("notes"):
            lines.append(f"  note            {row['notes']}")
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.azure.model_catalog import load_catalog
    from phi_finetune.cli._common import emit

    catalog = load_catalog()
    now = dt.datetime.now(dt.UTC)
    entries = catalog.entries if args.all else catalog.live(now)
    rows = [entry.to_dict(now) for entry in entries]
    if not args.offline:
        rows = _live_rows(args, rows)
    snapshot = catalog.snapshot
    header = (
        f"pinned catalogue: {snapshot['repo']} @ {snapshot['commit'][:10]} ({snapshot['date']})"
        + ("" if args.all else "; retired models hidden (--all shows them)")
    )
    emit(args, {"models": rows, "catalogue": dict(snapshot)}, header + "\n\n" + models_table(rows))
    return 0
