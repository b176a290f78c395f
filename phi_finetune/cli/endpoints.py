"""``phi-finetune endpoints list``: online endpoints, and which ones should not exist any more.

Every endpoint in the workspace is listed with the run that created it (from the run journals
under ``--state-dir``, or the ``phi_finetune.run_id`` tag phi_finetune puts on endpoints it
creates). An endpoint whose run journal records it as deleted, yet still exists, is marked
``SHOULD BE GONE``: it keeps billing, so delete it (``phi-finetune endpoints delete NAME``). Journal
entries the workspace no longer has are shown as ``stale``. ``--journal-only`` lists what the
journals say is still alive without contacting Azure (local servers included).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phi_finetune.cli._common import add_state_dir_option, emit, resolve_state_dir, workspace_for
from phi_finetune.names import RUN_ID_TAG

__all__ = ["register"]

_TAG_CREATOR = "created_by"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "endpoints",
        help="list online endpoints and flag those runs should have deleted",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="endpoints_command", metavar="ACTION")
    lister = sub.add_parser("list", help="list endpoints (marks ones that should be gone)")
    add_state_dir_option(lister)
    lister.add_argument(
        "--journal-only",
        action="store_true",
        help="only what the run journals hold; do not contact Azure",
    )
    lister.set_defaults(handler=run_list)
    deleter = sub.add_parser("delete", help="delete an endpoint (already gone is success)")
    deleter.add_argument("name", help="endpoint name")
    deleter.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_state_dir_option(deleter)
    deleter.set_defaults(handler=run_delete)
    parser.set_defaults(handler=_usage(parser))
    # --json / -v / --config are accepted after the action too, like after any command.
    from phi_finetune.cli.main import _add_global_options

    for action in (lister, deleter):
        _add_global_options(action, suppress=True)


def _usage(parser: argparse.ArgumentParser) -> Any:
    def handler(args: Any) -> int:
        parser.print_help()
        return 2

    return handler


def _ml_client(args: Any) -> Any:
    """The workspace ``MLClient`` (tests replace it)."""
    return workspace_for(args).ml_client


def _journal_index(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """endpoint name -> every journal entry naming it (newest run last)."""
    from phi_finetune.journal import list_runs

    index: dict[str, list[dict[str, Any]]] = {}
    for run in list_runs(state_dir):
        if run.error is not None:
            continue
        from phi_finetune.journal import Journal

        journal = Journal.load(state_dir, run.run_id)
        for record in journal.resources():
            if record.kind not in ("endpoint", "local_server"):
                continue
            index.setdefault(record.name, []).append(
                {
                    "run_id": run.run_id,
                    "backend": run.backend,
                    "kind": record.kind,
                    "journal_state": record.state,
                    "created_by_run": record.created_by_run,
                    "scoring_uri": record.details.get("scoring_uri"),
                    "updated_at": record.updated_at,
                }
            )
    return index


def collect(args: Any) -> list[dict[str, Any]]:
    """The rows ``endpoints list`` prints (also what ``--json`` emits)."""
    state_dir = resolve_state_dir(args)
    index = _journal_index(state_dir)
    rows: list[dict[str, Any]] = []
    if args.journal_only:
        for name, entries in sorted(index.items()):
            last = entries[-1]
            if last["journal_state"] == "deleted":
                continue
            rows.append(
                {
                    "name": name,
                    "exists": None,
                    "provisioning_state": None,
                    **last,
                    "should_be_gone": False,
                    "note": "journal says alive (existence not checked)",
                }
            )
        return rows

    from phi_finetune.azure.boundary import call

    ml_client = _ml_client(args)
    remote = call(
        "list the workspace's online endpoints", lambda: list(ml_client.online_endpoints.list())
    )
    # Serverless endpoints are listed only when a journal here has a serverless run (one more
    # request otherwise for nothing).
    if any(e["backend"] == "serverless" for entries in index.values() for e in entries):
        remote += call(
            "list the workspace's serverless endpoints",
            lambda: list(ml_client.serverless_endpoints.list()),
        )
    seen: set[str] = set()
    for endpoint in sorted(remote, key=lambda e: str(e.name)):
        name = str(endpoint.name)
        seen.add(name)
        tags = dict(getattr(endpoint, "tags", None) or {})
        entries = [e for e in index.get(name, []) if e["kind"] == "endpoint"]
        entry = entries[-1] if entries else None
        run_id = entry["run_id"] if entry else tags.get(RUN_ID_TAG)
        ours = entry is not None or tags.get(_TAG_CREATOR) == "phi_finetune" or RUN_ID_TAG in tags
        should_be_gone = entry is not None and entry["journal_state"] == "deleted"
        if should_be_gone:
            note = (
                f"SHOULD BE GONE: run {run_id} recorded it deleted; it still bills "
                f"(`phi-finetune endpoints delete {name}`)"
            )
        elif entry is not None:
            note = f"held by run {run_id}"
        elif ours:
            note = f"created by phi_finetune run {run_id or '?'} (no journal here)"
        else:
            note = ""
        rows.append(
            {
                "name": name,
                "exists": True,
                "provisioning_state": getattr(endpoint, "provisioning_state", None),
                "scoring_uri": getattr(endpoint, "scoring_uri", None),
                "run_id": run_id,
                "created_by_phi_finetune": ours,
                "journal_state": entry["journal_state"] if entry else None,
                "should_be_gone": should_be_gone,
                "note": note,
            }
        )
    for name, entries in sorted(index.items()):
        final = entries[-1]
        if (
            name in seen
            or final["kind"] != "endpoint"
            or final["backend"] not in ("azure", "serverless")
        ):
            continue
        if final["journal_state"] == "deleted":
            continue
        rows.append(
            {
                "name": name,
                "exists": False,
                "provisioning_state": None,
                "scoring_uri": final["scoring_uri"],
                "run_id": final["run_id"],
                "created_by_phi_finetune": True,
                "journal_state": final["journal_state"],
                "should_be_gone": False,
                "note": "stale: the journal says alive but the workspace has no such endpoint",
            }
        )
    return rows


def run_list(args: Any) -> int:
    rows = collect(args)
    if not rows:
        emit(args, [], text="no endpoints")
        return 0
    width = max(len(str(r["name"])) for r in rows)
    lines = []
    for row in rows:
        mark = "!" if row["should_be_gone"] else " "
        state = row.get("provisioning_state") or row.get("journal_state") or "?"
        lines.append(f"{mark} {row['name']:<{width}}  {state:<10}  {row['note']}".rstrip())
    gone = sum(1 for r in rows if r["should_be_gone"])
    if gone:
        lines.append(
            f"{gone} endpoint(s) should be gone and still bill: "
            "`phi-finetune endpoints delete NAME` deletes one"
        )
    emit(args, rows, text="\n".join(lines))
    return 0


def run_delete(args: Any) -> int:
    import sys

    from phi_finetune.azure.deployer import EndpointDeployer
    from phi_finetune.journal import Journal, list_runs
    from phi_finetune.names import validate_endpoint_name

    name = validate_endpoint_name(args.name, parameter="NAME")
    if not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write(f"error: pass --yes to delete endpoint {name} non-interactively\n")
            return 2
        answer = input(f"delete endpoint {name} and all its deployments? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            sys.stderr.write("not deleted\n")
            return 1
    state_dir = resolve_state_dir(args)
    entries = _journal_index(state_dir).get(name) or [{}]
    if entries[-1].get("backend") == "serverless":
        from phi_finetune.serverless.endpoint import delete_endpoint, get_endpoint

        ml_client = _ml_client(args)
        existed = get_endpoint(ml_client, name) is not None
        if existed:
            delete_endpoint(ml_client, name)
    else:
        deployer = EndpointDeployer(_ml_client(args))
        existed = deployer.exists(name)
        if existed:
            deployer.delete(name)
    runs = []
    for run in list_runs(state_dir):
        if run.error is not None:
            continue
        journal = Journal.load(state_dir, run.run_id)
        if journal.mark_deleted("endpoint", name) is not None:
            runs.append(run.run_id)
    text = f"endpoint {name} {'deleted' if existed else 'was already gone'}"
    if runs:
        text += f" (recorded in run {', '.join(runs)})"
    emit(args, {"name": name, "deleted": existed, "runs": runs}, text=text)
    return 0
