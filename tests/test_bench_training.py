"""The training benchmark's anchors are sound (issue 17).

- FLOP counting and the per-step statistics it reads from collated batches;
- TRL runs fp32 without gradient checkpointing on CPU, ``padding_free`` is accepted
  (``max_length=None`` on pre-truncated inputs), ``packing`` sees the same tokens per step;
- on the same batches, HF ``Trainer`` and TRL ``SFTTrainer`` reach the same training and
  held-out losses as ``LocalTrainer`` (so a held-out-loss gap in the speed runs comes from
  batch composition, not from a different loss, optimizer, schedule or initialisation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import training_anchors as A  # noqa: E402


def test_useful_flops_by_hand() -> None:
    sizes = {"body": 1000, "lora": 10, "hidden": 8, "layers": 2, "vocab": 50}
    step = A.step_stats([3, 5], scored=4)
    assert step == {"tokens": 8, "scored": 4, "sum_sq": 34, "sequences": 2}
    expected = 8 * (4 * 1000 + 6 * 10) + 6 * 2 * 8 * 34 + 4 * 8 * 50 * 4
    assert A.useful_flops(sizes, [step, step]) == 2 * expected


def test_collated_stats_padded_and_padding_free() -> None:
    torch = pytest.importorskip("torch")
    padded = {
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]]),
    }
    assert A.collated_stats(padded) == {"tokens": 7, "scored": 4, "sum_sq": 25, "sequences": 2}
    flat = {
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3]]),
        "labels": torch.tensor([[-100, 5, 6, -100, -100, 7, 8]]),
    }
    assert A.collated_stats(flat) == {"tokens": 7, "scored": 4, "sum_sq": 25, "sequences": 2}


def test_ratio_summary_is_median_min_max() -> None:
    assert A.ratio_summary([1.3, 0.9, 1.1]) == (1.1, 0.9, 1.3)


def test_our_batch_order_is_the_trainers() -> None:
    import random

    from phi_finetune.local.examples import length_batches

    examples: list[Any] = [([1] * (i % 17 + 2), [0, 1] * 10) for i in range(40)]
    rng = random.Random(0)
    expected = length_batches(examples, 4, rng) + length_batches(examples, 4, rng)
    assert A.our_batch_order(examples, 4, 13) == expected[:13]


def test_trl_settings_fp32_no_checkpointing_padding_free_packing() -> None:
    spec = {"max_seq_length": 512, "batch": 8}
    examples: list[Any] = [([1] * 128, [1] * 128)] * 4
    default = A.trl_settings("trl_default", spec, examples)
    assert default["bf16"] is False and default["fp16"] is False
    assert default["completion_only_loss"] is True
    assert A.trl_settings("trl_padding_free", spec, examples)["max_length"] is None
    packing = A.trl_settings("trl_packing", spec, examples)
    assert packing["packing"] is True
    assert packing["per_device_train_batch_size"] == 2  # 8 x 128 tokens in rows of 512


def _tiny_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import argparse

    # Importing the benchmark sets offline / no-progress defaults: keep them to this test.
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PHI_FINETUNE_NO_PROGRESS"):
        monkeypatch.setenv(key, "1")
    import bench_local_training as bench

    args = argparse.Namespace(examples=48, hidden=64, layers=1, model_vocab=None)
    return Path(bench.prepare(args, tmp_path / "work"))


def _spawn(name: str, work: Path, steps: int) -> dict[str, Any]:
    spec = {"steps": steps, "batch": 4, "max_seq_length": 128, "threads": 1}
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_local_training.py"), "--one", name, "--work",
         str(work), "--spec", json.dumps(spec)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_anchors_on_our_batches_reach_our_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("peft")
    pytest.importorskip("trl")
    work = _tiny_work(tmp_path, monkeypatch)
    ours = _spawn("ours", work, 5)
    for name in ("hf_same_batches", "trl_same_batches"):
        theirs = _spawn(name, work, 5)
        assert len(theirs["train_losses"]) == len(ours["train_losses"]) == 5
        for a, b in zip(theirs["train_losses"], ours["train_losses"], strict=True):
            assert a == pytest.approx(b, rel=1e-4), name
        assert theirs["held_out_loss"] == pytest.approx(ours["held_out_loss"], rel=1e-4), name
        assert theirs["steps"] == 5


@pytest.mark.slow
def test_trl_padding_free_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("trl")
    work = _tiny_work(tmp_path, monkeypatch)
    result = _spawn("trl_padding_free", work, 4)
    assert result["tokens_per_s"] > 0 and result["steps"] == 4


def test_training_result_dict_round_trip(tmp_path: Path) -> None:
    from phi_finetune.local.parameters import IgnoredParameter
    from phi_finetune.local.results import StepMetrics, TrainingResult

    result = TrainingResult(
        adapter_dir=tmp_path / "adapter",
        merged_dir=None,
        checkpoints=(tmp_path / "checkpoints" / "step-2",),
        history=(
            StepMetrics(1, 0.5, 2.0, 10.0, 1e-3, 40),
            StepMetrics(2, 1.0, 1.5, 9.0, eval_loss=1.7),
        ),
        eval_loss=1.7,
        ignored=(IgnoredParameter("x", 1, "why"),),
        parameters={"lora_r": 8},
        tokens_trained=80,
        steps=2,
        resumed_from=tmp_path / "checkpoints" / "step-1",
        processes=2,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert TrainingResult.from_dict(data) == result
    assert data["adapter_dir"] == str(tmp_path / "adapter") and data["merged_dir"] is None


@pytest.mark.slow
def test_kernel_benchmark_replays_the_trainers_steps() -> None:
    pytest.importorskip("peft")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_training_kernels.py"),
            "--rounds",
            "1",
            "--steps",
            "4",
            "--switches",
            "fused_lora,no_cache,loop_adamw",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("4 steps, ") and "tokens per replay" in lines[0]
    for name in ("fused_lora", "no_cache", "loop_adamw"):
        assert any(line.startswith(f"{name}: speed on/off median ") for line in lines), name
