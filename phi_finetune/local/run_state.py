"""The state of one local training run, shared by the loop, evaluation and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from phi_finetune.local.distributed import World
from phi_finetune.local.evaluation import EarlyStopping, EvalSchedule
from phi_finetune.local.examples import Example
from phi_finetune.local.model_loading import Hardware
from phi_finetune.local.results import StepMetrics

__all__ = ["RunState"]


@attrs.define
class RunState:
    """The state the steps of one :meth:`~phi_finetune.local.training.LocalTrainer.train` call
    share (and what a checkpoint saves of it)."""

    model: Any
    """The PEFT model being trained."""
    tokenizer: Any
    examples: list[Example]
    eval_examples: list[Example]
    hardware: Hardware
    world: World
    optimizer: Any
    scheduler: Any
    epochs: int
    total_steps: int
    schedule: EvalSchedule
    early: EarlyStopping
    fingerprint: str
    step: int = 0
    tokens_trained: int = 0
    history: list[StepMetrics] = attrs.Factory(list)
    checkpoints: list[Path] = attrs.Factory(list)
    # Where the data order stands: the epoch, its next accumulation group and the data
    # generator's state at the epoch's start (what a resume continues from).
    epoch: int = 0
    next_group: int = 0
    epoch_rng_state: Any = None
    last_eval: tuple[int, float] | None = None
    stopped_early: bool = False
    resumed_from: Path | None = None
    mlflow_run_id: str | None = None

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)
