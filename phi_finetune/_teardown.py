"""Deleting a run's billable resources: every deletion attempted, every failure reported.

Used by :meth:`FineTuneSession.teardown <phi_finetune.session.FineTuneSession.teardown>` (all
billable kinds) and by the clean-up after an error in ``run()``, which deletes only
:data:`CLEANUP_ON_ERROR_KINDS`: what bills while idle and a resume recreates. A fine-tune job is
progress, so only an explicit teardown (or cancel) stops it.

The journal ends in a true state whatever happens: the ``teardown`` step is completed or failed
(never left ``running``, a Ctrl-C included), a resource is marked deleted only once its
deletion succeeded, and what failed stays listed as live for the next attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from phi_finetune._redact import redact
from phi_finetune.errors import PhiFinetuneError, RunStateError
from phi_finetune.steps import TeardownRecord

if TYPE_CHECKING:
    from phi_finetune.backends import Backend, StepContext
    from phi_finetune.journal import Journal, ResourceRecord

__all__ = ["CLEANUP_ON_ERROR_KINDS", "delete_billable"]

logger = logging.getLogger(__name__)

#: What an error or Ctrl-C during ``run()`` deletes: billed while idle, recreated on resume.
CLEANUP_ON_ERROR_KINDS = frozenset({"endpoint", "deployment", "local_server"})


def delete_billable(
    journal: Journal,
    backend: Backend,
    ctx: StepContext,
    *,
    kinds: Collection[str] | None = None,
) -> list[str]:
    """Delete the run's live billable resources (only ``kinds`` when given) as step
    ``teardown``; returns ``kind:name`` of each one deleted.

    Raises :class:`RunStateError` listing every resource that could not be deleted, after all
    the others were attempted.
    """
    run_id = journal.run_id
    inputs: dict[str, Any] = {} if kinds is None else {"kinds": sorted(kinds)}
    journal.begin_step("teardown", inputs=inputs)
    deleted: list[str] = []
    problems: list[str] = []
    try:
        if kinds is None or "job" in kinds:
            _reconcile(backend, ctx)
        live = [
            r
            for r in journal.resources(billable_only=True, alive_only=True)
            if kinds is None or r.kind in kinds
        ]
        # A deployment goes with its endpoint: endpoints first, deployments after them.
        live.sort(key=lambda r: r.kind == "deployment")
        failed_endpoints: list[str] = []
        for resource in live:
            if resource.kind == "deployment" and failed_endpoints:
                problems.append(
                    f"deployment {resource.name!r}: not deleted, since it goes with endpoint "
                    f"{failed_endpoints[0]!r}, which could not be deleted"
                )
                continue
            try:
                backend.delete_resource(ctx, resource)
            except Exception as exc:  # every deletion is attempted; each failure is reported
                problems.append(_problem(resource, exc))
                if resource.kind == "endpoint":
                    failed_endpoints.append(resource.name)
                continue
            journal.mark_deleted(resource.kind, resource.name, version=resource.version)
            deleted.append(f"{resource.kind}:{resource.name}")
    except BaseException as exc:  # Ctrl-C or a kill signal: the step must not stay "running"
        done = ", ".join(deleted) or "nothing"
        journal.fail_step(
            "teardown",
            f"interrupted ({type(exc).__name__}) after deleting {done}; run "
            f"`phi-finetune teardown {run_id}` again to finish (it is safe to repeat)",
        )
        raise
    if problems:
        for problem in problems:
            logger.error("run %s: teardown: %s", run_id, problem)
        message = (
            f"run {run_id}: teardown could not delete {len(problems)} resource(s): "
            + "; ".join(problems)
            + f". Deleted: {', '.join(deleted) or 'nothing'}. What failed stays listed as live "
            f"in the journal (`phi-finetune status {run_id}`) and may still bill: fix the cause "
            f"and run `phi-finetune teardown {run_id}` again (safe to repeat), or delete it in "
            "the Azure ML studio"
        )
        journal.fail_step("teardown", redact(message))
        raise RunStateError(message)
    journal.complete_step("teardown", TeardownRecord(deleted=tuple(deleted)).to_dict())
    return deleted


def _reconcile(backend: Backend, ctx: StepContext) -> None:
    """Let the backend resolve resources journaled as "creating" whose name the service gave
    (a job found by its run tag) into journal entries, before they are deleted."""
    reconcile = getattr(backend, "reconcile", None)
    if reconcile is None:
        return
    try:
        reconcile(ctx)
    except Exception as exc:
        # The entries stay "creating"; delete_resource tries the lookup once more.
        logger.warning("run %s: could not reconcile with the service: %s", ctx.journal.run_id, exc)


def _problem(resource: ResourceRecord, exc: BaseException) -> str:
    why = str(exc) if isinstance(exc, PhiFinetuneError) else f"{type(exc).__name__}: {exc}"
    what = f"{resource.kind} {resource.name!r}"
    if resource.version is not None:
        what += f" version {resource.version}"
    return f"{what}: {redact(why)}"
