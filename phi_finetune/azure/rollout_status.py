"""What a rollout plans and where it stands: :class:`RolloutStatus`, the plan's checks and the
journal reads (no request; :mod:`phi_finetune.azure.rollout` drives the rollout)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.errors import ConfigurationError, RunStateError

if TYPE_CHECKING:
    from phi_finetune.journal import Journal

__all__ = [
    "DEFAULT_STEPS",
    "MAX_MIRROR_PERCENT",
    "RolloutStatus",
    "current_deployment",
    "journaled_status",
    "stage_texts",
]

#: Live traffic percentages the new deployment gets, one stage each.
DEFAULT_STEPS: tuple[int, ...] = (10, 50, 100)
#: The service's limit: mirrored traffic values "need to sum to utmost 50" (REST spec,
#: OnlineEndpoint.mirrorTraffic).
MAX_MIRROR_PERCENT = 50
KEY = "rollout"
ACTIVE = ("rolling_out", "rolling_back")


def shares(values: Mapping[str, Any] | None) -> dict[str, int]:
    """Traffic as the service keeps it: zero shares dropped, names in lower case (the SDK
    lower-cases them)."""
    return {str(k).lower(): int(v) for k, v in dict(values or {}).items() if v and int(v)}


@attrs.frozen
class RolloutStatus:
    """Where a rollout stands (read from the journal; no request)."""

    endpoint_name: str
    old_deployment: str
    new_deployment: str
    model: str
    steps: tuple[int, ...]
    mirror_percent: int
    delete_old: bool
    phase: str
    """``rolling_out``, ``done``, ``rolling_back`` or ``rolled_back``."""
    stages_done: int
    stages: tuple[str, ...]
    """What each stage does, in order."""
    traffic: Mapping[str, int]
    """The live traffic last applied (zero shares left out)."""
    mirror_traffic: Mapping[str, int]
    history: tuple[Mapping[str, Any], ...] = ()
    """Every traffic state applied, in order (``traffic``, ``mirror_traffic``, ``at``)."""

    @property
    def next_stage(self) -> str | None:
        """What :meth:`Rollout.step` does next; ``None`` once the rollout is over."""
        if self.phase == "rolling_back":
            return "finish the rollback"
        if self.phase != "rolling_out":
            return None
        return self.stages[self.stages_done] if self.stages_done < len(self.stages) else None

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data.update(
            steps=list(self.steps),
            stages=list(self.stages),
            traffic=dict(self.traffic),
            mirror_traffic=dict(self.mirror_traffic),
            history=[dict(h) for h in self.history],
            next_stage=self.next_stage,
        )
        return data

    def __str__(self) -> str:
        lines = [
            f"rollout of {self.model} on endpoint {self.endpoint_name}: "
            f"{self.old_deployment} -> {self.new_deployment} ({self.phase})"
        ]
        for index, stage in enumerate(self.stages):
            mark = "x" if index < self.stages_done else " "
            lines.append(f"  [{mark}] {stage}")
        traffic = ", ".join(f"{k} {v}%" for k, v in sorted(self.traffic.items())) or "none"
        lines.append(f"  live traffic: {traffic}")
        if self.mirror_traffic:
            mirrored = ", ".join(f"{k} {v}%" for k, v in sorted(self.mirror_traffic.items()))
            lines.append(f"  mirrored: {mirrored}")
        return "\n".join(lines)


def check_plan(steps: Sequence[int], mirror_percent: int, old: str, new: str) -> tuple[int, ...]:
    values = tuple(steps)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ConfigurationError(
            f"steps={list(values)!r} must be a non-empty list of integer percentages such as "
            "[10, 50, 100]",
            key="steps",
        )
    if any(not 1 <= v <= 100 for v in values) or list(values) != sorted(set(values)):
        raise ConfigurationError(
            f"steps={list(values)!r} must rise strictly, each between 1 and 100; "
            "e.g. [10, 50, 100]",
            key="steps",
        )
    if values[-1] != 100:
        raise ConfigurationError(
            f"steps={list(values)!r} must end at 100 (all traffic on the new deployment) before "
            "the old one can be deleted; add 100 as the last step",
            key="steps",
        )
    if isinstance(mirror_percent, bool) or not isinstance(mirror_percent, int):
        raise ConfigurationError("mirror_percent must be an integer 0..50", key="mirror_percent")
    if not 0 <= mirror_percent <= MAX_MIRROR_PERCENT:
        raise ConfigurationError(
            f"mirror_percent={mirror_percent} is out of range: the service mirrors at most "
            f"{MAX_MIRROR_PERCENT}% of the traffic; use 0 (no shadow test) to {MAX_MIRROR_PERCENT}",
            key="mirror_percent",
        )
    if new.lower() == old.lower():
        raise ConfigurationError(
            f"deployment_name={new!r} is the deployment being replaced; give the new model "
            "version's deployment another name (e.g. 'v2')",
            key="deployment_name",
        )
    return values


def plans(journal: Journal) -> list[dict[str, Any]]:
    """Every rollout plan the run's journal holds (on its new deployment's record)."""
    out = []
    for record in journal.resources(kind="deployment"):
        plan = record.details.get(KEY)
        if isinstance(plan, Mapping):
            out.append(dict(plan))
    return out


def record_of(journal: Journal) -> dict[str, Any] | None:
    """The plan and progress of the run's latest rollout (``None``: there was none)."""
    found = plans(journal)
    return max(found, key=lambda p: int(p.get("seq", 0))) if found else None


def current_deployment(journal: Journal, default: str | None) -> str | None:
    """The deployment that serves the run's endpoint after its rollouts: the new one of a
    finished rollout, else ``default`` (the deploy step's)."""
    plan = record_of(journal)
    if plan is not None and plan["phase"] == "done":
        return str(plan["new"])
    return default


def stage_texts(plan: Mapping[str, Any]) -> list[str]:
    """What each stage of ``plan`` does, in order."""
    old, new, mirror = plan["old"], plan["new"], int(plan["mirror_percent"])
    shadow = f", {mirror}% of the traffic mirrored to it" if mirror else ""
    texts = [f"create deployment {new} with 0% live traffic{shadow}"]
    texts += [f"live traffic {old} {100 - s}% / {new} {s}%" for s in plan["steps"]]
    if plan["delete_old"]:
        texts.append(f"delete deployment {old}")
    return texts


def journaled_status(journal: Journal) -> RolloutStatus:
    """The status of the run's latest rollout, from its journal (no request)."""
    plan = record_of(journal)
    if plan is None:
        raise RunStateError(
            f"run {journal.run_id} has no rollout; begin one with `phi-finetune rollout start "
            f"{journal.run_id} --model azureml:NAME:VERSION` or FineTuneSession.rollout(model)"
        )
    return RolloutStatus(
        endpoint_name=plan["endpoint"],
        old_deployment=plan["old"],
        new_deployment=plan["new"],
        model=plan["model"],
        steps=tuple(plan["steps"]),
        mirror_percent=int(plan["mirror_percent"]),
        delete_old=bool(plan["delete_old"]),
        phase=plan["phase"],
        stages_done=int(plan["stages_done"]),
        stages=tuple(stage_texts(plan)),
        traffic=dict(plan["traffic"]),
        mirror_traffic=dict(plan["mirror_traffic"]),
        history=tuple(plan["history"]),
    )
