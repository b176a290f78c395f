"""When the local trainer evaluates, the evaluation loss, and early stopping.

The parameters are the Azure component's: ``evaluation_strategy`` (``epoch``, ``steps`` or
``disable``), ``eval_steps`` / ``evaluation_steps_interval`` (a fraction of an epoch's steps,
which wins when not 0), and ``apply_early_stopping`` with ``early_stopping_patience`` and
``early_stopping_threshold`` (the metric is the evaluation loss, lower is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from phi_finetune.local.batches import collate, loss_sum
from phi_finetune.local.examples import Example, length_batches

__all__ = ["EarlyStopping", "EvalSchedule", "evaluation_loss"]


@attrs.frozen
class EvalSchedule:
    """Which optimizer steps end with an evaluation."""

    strategy: str
    every: int
    """Steps between evaluations when ``strategy == "steps"``."""

    @classmethod
    def from_parameters(cls, p: Mapping[str, Any], steps_per_epoch: int) -> EvalSchedule:
        interval = float(p["evaluation_steps_interval"])
        every = int(p["eval_steps"])
        if interval > 0:
            every = max(1, math.ceil(interval * steps_per_epoch))
        return cls(str(p["evaluation_strategy"]), every)

    def due(self, step: int, *, epoch_end: bool) -> bool:
        """Whether to evaluate after ``step`` (``epoch_end``: it ended an epoch)."""
        if self.strategy == "steps":
            return step % self.every == 0
        return self.strategy == "epoch" and epoch_end


@attrs.define
class EarlyStopping:
    """Stop after ``patience`` evaluations without an improvement larger than ``threshold``.

    Same rule as Hugging Face's ``EarlyStoppingCallback``, which the Azure component uses.
    """

    enabled: bool
    patience: int
    threshold: float
    best: float | None = None
    bad_evaluations: int = 0

    @classmethod
    def from_parameters(cls, p: Mapping[str, Any]) -> EarlyStopping:
        return cls(
            bool(p["apply_early_stopping"]),
            int(p["early_stopping_patience"]),
            float(p["early_stopping_threshold"]),
        )

    def update(self, loss: float) -> bool:
        """Record an evaluation loss; ``True`` when training should stop now."""
        if self.best is None or (loss < self.best and self.best - loss > self.threshold):
            self.best = loss
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
        return self.enabled and self.bad_evaluations >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evaluations": self.bad_evaluations}

    def restore(self, state: Mapping[str, Any]) -> None:
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.bad_evaluations = int(state.get("bad_evaluations", 0))


def evaluation_loss(
    model: Any,
    examples: Sequence[Example],
    batch_size: int,
    pad_id: int,
    device: str,
    autocast: Callable[[], Any],
) -> float | None:
    """Mean loss per assistant token over ``examples`` (``None`` when there are none)."""
    import torch

    if not examples:
        return None
    was_training = model.training
    model.eval()
    total = 0.0
    count = 0
    with torch.no_grad():
        for batch in length_batches(examples, batch_size, None):
            ids, labels = collate(examples, batch, pad_id, device)
            with autocast():
                loss, n = loss_sum(model, ids, labels)
            total += float(loss.item())
            count += n
    model.train(was_training)
    return total / count if count else None
