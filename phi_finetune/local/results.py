"""What the local trainer reports: per-step metrics and the training result."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.local.parameters import IgnoredParameter

__all__ = ["StepMetrics", "TrainingResult"]


@attrs.frozen
class StepMetrics:
    """Metrics of one optimizer step."""

    step: int
    epoch: float
    loss: float
    tokens_per_s: float
    learning_rate: float = 0.0
    tokens: int = 0
    """Non-pad tokens processed in this step."""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class TrainingResult:
    """What :meth:`~phi_finetune.local.training.LocalTrainer.train` produced."""

    adapter_dir: Path
    """The final LoRA adapter (``adapter_config.json`` + weights) and tokenizer."""
    merged_dir: Path | None
    """The base model with the adapter merged in, plus tokenizer (``None`` when not merged)."""
    checkpoints: tuple[Path, ...]
    """One adapter checkpoint per completed epoch (and one where ``max_steps`` stopped)."""
    history: tuple[StepMetrics, ...]
    eval_loss: float | None
    ignored: tuple[IgnoredParameter, ...]
    parameters: Mapping[str, Any] = attrs.field(converter=dict)
    """The resolved parameters actually used."""
    tokens_trained: int = 0
    """Non-pad tokens processed (all epochs)."""
    steps: int = 0
    duration_s: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    mlflow_run_id: str | None = None
    skipped_examples: int = 0
    """Training examples dropped (no assistant token left after truncation)."""

    @property
    def final_loss(self) -> float | None:
        return self.history[-1].loss if self.history else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """History as ``[{step, epoch, loss, tokens_per_s, ...}, ...]``."""
        return [m.to_dict() for m in self.history]
