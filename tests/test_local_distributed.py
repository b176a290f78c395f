"""Data parallel local training: 2 CPU processes (gloo) take the same steps as one process.

One process with ``per_device_train_batch_size = 4`` and two processes with 2 each see the same
global batches; the gradients are summed across processes, so the losses agree up to float
summation order (tolerance: 1e-5 relative). LoRA dropout is 0: with dropout the random masks
differ between layouts, so the losses would differ by design.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("peft")

from phi_finetune.errors import LocalBackendError
from phi_finetune.local.tiny_model import build_tiny_model
from phi_finetune.local.training import LocalTrainer

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "learning_rate": "0.01",
    "lora_dropout": "0.0",
    "max_seq_length": "64",
    "max_steps": "5",
    "seed": "5",
    "save_steps": "0",
    "evaluation_strategy": "steps",
    "eval_steps": "2",
}


def records(n: int) -> list[dict[str, Any]]:
    words = ["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "grey", "pink"]
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(words[i % 3 : i % 3 + 2 + i % 5])},
                {"role": "assistant", "content": " ".join(words[i % 4 : i % 4 + 3 + i % 4])},
            ]
        }
        for i in range(n)
    ]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import this checkout
    data = records(18)  # global batch 4: 5 steps, the last batch has 2 rows (1 per process)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    model = build_tiny_model(tmp_path / "model", texts=data, seed=0)
    one = LocalTrainer(
        model,
        output_dir=tmp_path / "one",
        parameters={**PARAMS, "per_device_train_batch_size": 4},
        device="cpu",
    ).train(train, validation=data[:5])
    trainer = LocalTrainer(
        model,
        output_dir=tmp_path / "two",
        parameters={**PARAMS, "per_device_train_batch_size": 2},
        device="cpu",
        processes=2,
    )
    two = trainer.train(train, validation=data[:5])
    assert two.processes == 2 and one.processes == 1
    assert two.steps == one.steps == 5
    assert two.tokens_trained == one.tokens_trained
    for a, b in zip(one.history, two.history, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-5)
    assert [s for s, _ in two.evaluations] == [2, 4, 5]
    assert two.eval_loss == pytest.approx(one.eval_loss, rel=1e-5)
    assert two.merged_dir == tmp_path / "two" / "merged"
    assert (two.merged_dir / "config.json").is_file()
    logs = sorted(p.name for p in (tmp_path / "two" / ".processes").glob("worker-*.log"))
    assert logs == ["worker-0.log", "worker-1.log"]


@pytest.mark.slow
def test_a_failing_worker_stops_the_others_and_names_its_log(tmp_path: Path) -> None:
    trainer = LocalTrainer(
        tmp_path / "no-such-model", output_dir=tmp_path / "out", device="cpu", processes=2
    )
    with pytest.raises(LocalBackendError, match=r"worker \d exited with code .*worker-\d\.log"):
        trainer.train(records(4))
