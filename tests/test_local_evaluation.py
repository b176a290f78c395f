"""Evaluation cadence (evaluation_strategy / eval_steps) and early stopping of the local trainer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from phi_finetune.errors import ParameterError
from phi_finetune.local.evaluation import EarlyStopping, EvalSchedule
from phi_finetune.local.parameters import resolve_parameters


def test_schedule_follows_the_component_names() -> None:
    p, _ = resolve_parameters({"evaluation_strategy": "steps", "eval_steps": "3"})
    schedule = EvalSchedule.from_parameters(p, steps_per_epoch=10)
    assert [s for s in range(1, 11) if schedule.due(s, epoch_end=s == 10)] == [3, 6, 9]
    # evaluation_steps_interval (a fraction of an epoch) wins over eval_steps when not 0.
    p, _ = resolve_parameters(
        {"evaluation_strategy": "steps", "eval_steps": 3, "evaluation_steps_interval": 0.5}
    )
    assert EvalSchedule.from_parameters(p, steps_per_epoch=10).every == 5
    p, _ = resolve_parameters({})
    epoch = EvalSchedule.from_parameters(p, steps_per_epoch=10)
    assert epoch.strategy == "epoch"
    assert epoch.due(10, epoch_end=True) and not epoch.due(5, epoch_end=False)
    p, _ = resolve_parameters({"evaluation_strategy": "disable"})
    assert not EvalSchedule.from_parameters(p, 10).due(10, epoch_end=True)


def test_early_stopping_rule() -> None:
    rule = EarlyStopping(enabled=True, patience=2, threshold=0.1)
    assert not rule.update(3.0)  # first evaluation sets the best
    assert not rule.update(2.95)  # improved by less than the threshold: 1 bad
    assert not rule.update(2.5)  # improved by more: reset
    assert rule.best == 2.5 and rule.bad_evaluations == 0
    assert not rule.update(2.6)
    assert rule.update(2.7)  # the second bad evaluation in a row stops
    off = EarlyStopping(enabled=False, patience=1, threshold=0.0)
    assert not off.update(1.0) and not off.update(2.0)


def test_bad_evaluation_parameters_name_the_parameter() -> None:
    with pytest.raises(ParameterError) as caught:
        resolve_parameters(
            {
                "evaluation_strategy": "sometimes",
                "early_stopping_patience": 0,
                "save_steps": -1,
                "evaluation_steps_interval": 2,
            }
        )
    names = {p.name for p in caught.value.problems}
    assert names == {
        "evaluation_strategy",
        "early_stopping_patience",
        "save_steps",
        "evaluation_steps_interval",
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    pytest.importorskip("torch")
    from phi_finetune.local.tiny_model import build_tiny_model

    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    data = [
        {
            "messages": [
                {"role": "user", "content": " ".join(words[: 2 + i % 6])},
                {"role": "assistant", "content": " ".join(words[i % 4 : i % 4 + 5])},
            ]
        }
        for i in range(24)
    ]
    return build_tiny_model(tmp_path_factory.mktemp("eval") / "m", texts=data, seed=0), data


FAST = {
    "learning_rate": "0.01",
    "per_device_train_batch_size": "4",
    "lora_dropout": "0.0",
    "max_seq_length": "64",
    "save_steps": "0",
}


@pytest.mark.slow
def test_eval_loss_every_eval_steps_in_metrics(
    tiny: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from phi_finetune.local.training import LocalTrainer

    model, data = tiny
    params = {**FAST, "max_steps": 7, "evaluation_strategy": "steps", "eval_steps": 3}
    result = LocalTrainer(model, output_dir=tmp_path, parameters=params, device="cpu").train(
        data, validation=data[:6]
    )
    # every 3 steps, and the final evaluation after the last step
    assert [s for s, _ in result.evaluations] == [3, 6, 7]
    assert result.evaluations[-1][1] == result.eval_loss
    assert "eval_loss" in result.metrics[2] and "eval_loss" not in result.metrics[0]
    assert not result.stopped_early


@pytest.mark.slow
def test_early_stopping_ends_training(
    tiny: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from phi_finetune.local.training import LocalTrainer

    model, data = tiny
    params = {
        **FAST,
        "max_steps": 12,
        "evaluation_strategy": "steps",
        "eval_steps": 2,
        "apply_early_stopping": "true",
        "early_stopping_patience": 1,
        # no improvement can be this large: the second evaluation stops training
        "early_stopping_threshold": 100,
    }
    trainer = LocalTrainer(model, output_dir=tmp_path, parameters=params, device="cpu")
    result = trainer.train(data, validation=data[:6])
    assert result.stopped_early
    assert result.steps == 4
    assert [s for s, _ in result.evaluations] == [2, 4]
    assert result.checkpoints[-1].name == "epoch-1"  # a checkpoint where it stopped
    assert result.merged_dir is not None and result.merged_dir.is_dir()


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_losses(
    tiny: tuple[Path, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.local import model_loading
    from phi_finetune.local.training import LocalTrainer

    model, data = tiny
    enabled: list[bool] = []
    real = model_loading.enable_gradient_checkpointing

    def spy(m: Any) -> None:
        real(m)
        enabled.append(bool(m.is_gradient_checkpointing))

    monkeypatch.setattr("phi_finetune.local.training.enable_gradient_checkpointing", spy)
    runs = [
        LocalTrainer(
            model,
            output_dir=tmp_path / str(gc),
            parameters={**FAST, "max_steps": 3, "gradient_checkpointing": gc},
            device="cpu",
        ).train(data)
        for gc in (False, True)
    ]
    assert enabled == [True]  # only the second run, and it took effect on the model
    # Recomputing activations changes memory, not the maths.
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-6)


def test_report_draws_every_evaluation_of_the_history() -> None:
    from phi_finetune.report import _local_curves
    from phi_finetune.steps import TrainingSummary

    history = (
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.5, "eval_loss": 2.8},
        {"step": 3, "loss": 2.2},
        {"step": 4, "loss": 2.0, "eval_loss": 2.4},
    )
    training = TrainingSummary(
        base_model="m", merged_dir="d", eval_loss=2.4, steps=4, history=history
    )
    curves = _local_curves(training)
    assert curves.eval_steps == (2, 4) and curves.eval_loss == (2.8, 2.4)
    assert curves.train_steps == (1, 2, 3, 4)
    # A journal of 0.1.0 (no eval loss in the history) still shows the final evaluation.
    old = TrainingSummary(base_model="m", merged_dir="d", eval_loss=2.4, steps=4, history=())
    assert _local_curves(old).eval_loss == (2.4,)
