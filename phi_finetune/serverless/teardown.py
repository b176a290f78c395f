"""Teardown of a serverless run with its marketplace subscription (``phi-finetune teardown
--delete-marketplace-subscription``, or ``[serverless] delete_marketplace_subscription``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs

from phi_finetune.serverless.endpoint import SUBSCRIPTION_KIND

if TYPE_CHECKING:
    from phi_finetune.journal import Journal, ResourceRecord

__all__ = ["subscriptions_to_delete", "teardown_with_subscription"]


def subscriptions_to_delete(journal: Journal, *, flag: bool) -> list[ResourceRecord]:
    """The live, not-billable subscriptions a teardown deletes: with ``flag`` or when the run's
    configuration asks for it."""
    asked = flag or bool(
        (journal.config.get("serverless") or {}).get("delete_marketplace_subscription")
    )
    if not asked:
        return []
    return [r for r in journal.resources(kind=SUBSCRIPTION_KIND, alive_only=True) if not r.billable]


def teardown_with_subscription(
    run_id: str, *, state_dir: str | os.PathLike[str] | None = None
) -> list[str]:
    """Teardown of run ``run_id``, its marketplace subscription included."""
    from phi_finetune.session import FineTuneSession

    session = FineTuneSession.resume(run_id, state_dir=state_dir)
    serverless = attrs.evolve(session.config.serverless, delete_marketplace_subscription=True)
    session.config = attrs.evolve(session.config, serverless=serverless)
    return session.teardown()
