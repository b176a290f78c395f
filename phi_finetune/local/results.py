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
    eval_loss: float | None = None
    """The evaluation loss when this step ended with an evaluation (``evaluation_strategy``)."""

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a dict; ``eval_loss`` only when this step was evaluated."""
        values = attrs.asdict(self)
        if values["eval_loss"] is None:
            del values["eval_loss"]
        return values


@attrs.frozen
class TrainingResult:
    """What :meth:`~phi_finetune.local.training.LocalTrainer.train` produced."""

    adapter_dir: Path
    """The final LoRA adapter (``adapter_config.json`` + weights) and tokenizer."""
    merged_dir: Path | None
    """The base model with the adapter merged in, plus tokenizer (``None`` when not merged)."""
    checkpoints: tuple[Path, ...]
    """Resumable checkpoints: one per completed epoch (and one where ``max_steps`` or early
    stopping ended), and ``step-N`` ones every ``save_steps`` steps."""
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
    stopped_early: bool = False
    """Whether early stopping (``apply_early_stopping``) ended training before its last step."""
    resumed_from: Path | None = None
    """The checkpoint this run continued from (``resume_from_checkpoint``), if any."""
    processes: int = 1
    """How many data parallel processes trained."""

    @property
    def evaluations(self) -> list[tuple[int, float]]:
        """``(step, eval_loss)`` of the evaluations during training."""
        return [(m.step, m.eval_loss) for m in self.history if m.eval_loss is not None]

    @property
    def final_loss(self) -> float | None:
        return self.history[-1].loss if self.history else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """History as ``[{step, epoch, loss, tokens_per_s, ...}, ...]``."""
        return [m.to_dict() for m in self.history]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result (paths as strings); :meth:`from_dict` reads it."""
        return {
            "adapter_dir": str(self.adapter_dir),
            "merged_dir": _str_or_none(self.merged_dir),
            "checkpoints": [str(c) for c in self.checkpoints],
            "history": self.metrics,
            "eval_loss": self.eval_loss,
            "ignored": [i.to_dict() for i in self.ignored],
            "parameters": dict(self.parameters),
            "tokens_trained": self.tokens_trained,
            "steps": self.steps,
            "duration_s": self.duration_s,
            "device": self.device,
            "precision": self.precision,
            "mlflow_run_id": self.mlflow_run_id,
            "skipped_examples": self.skipped_examples,
            "stopped_early": self.stopped_early,
            "resumed_from": _str_or_none(self.resumed_from),
            "processes": self.processes,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TrainingResult:
        """The result :meth:`to_dict` wrote."""
        return cls(
            adapter_dir=Path(value["adapter_dir"]),
            merged_dir=_path_or_none(value["merged_dir"]),
            checkpoints=tuple(Path(c) for c in value["checkpoints"]),
            history=tuple(StepMetrics(**m) for m in value["history"]),
            eval_loss=value["eval_loss"],
            ignored=tuple(IgnoredParameter(**i) for i in value["ignored"]),
            parameters=value["parameters"],
            tokens_trained=value["tokens_trained"],
            steps=value["steps"],
            duration_s=value["duration_s"],
            device=value["device"],
            precision=value["precision"],
            mlflow_run_id=value["mlflow_run_id"],
            skipped_examples=value["skipped_examples"],
            stopped_early=value["stopped_early"],
            resumed_from=_path_or_none(value["resumed_from"]),
            processes=value["processes"],
        )


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _path_or_none(value: str | None) -> Path | None:
    return None if value is None else Path(value)
