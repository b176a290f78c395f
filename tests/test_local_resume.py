"""Resume after a kill: step checkpoints, a real SIGKILL, and the same losses as without one.

A child process trains and SIGKILLs itself right after a chosen optimizer step (``on_step``),
so the kill lands between checkpoints, as a real crash would. The resumed run must continue
from the newest checkpoint and, on CPU with a fixed seed, produce exactly the losses of an
uninterrupted run (LoRA dropout is on, so the restored generator states matter).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("peft")

from phi_finetune.local import checkpoints as ckpt
from phi_finetune.local.results import StepMetrics
from phi_finetune.local.tiny_model import build_tiny_model
from phi_finetune.local.training import LocalTrainer

ROOT = Path(__file__).resolve().parents[1]

PARAMS = {
    "learning_rate": "0.01",
    "per_device_train_batch_size": "4",
    "lora_r": "8",
    "lora_alpha": "16",
    "lora_dropout": "0.1",
    "seed": "3",
    "max_seq_length": "96",
    "num_train_epochs": "3",
    "save_steps": "3",
    "lr_scheduler_type": "cosine",
    "warmup_steps": "2",
}


def conversations(n: int) -> list[dict[str, Any]]:
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat",
        "while",
        "the",
        "sun",
        "rose",
        "over",
        "blue",
        "hills",
        "and",
        "red",
        "roofs",
    ]
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(words[i % 7 : i % 7 + 3 + i % 5])},
                {"role": "assistant", "content": " ".join(words[i % 5 : i % 5 + 4 + i % 6])},
            ]
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    data = conversations(20)  # 5 steps per epoch, 15 steps
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    evaluation = root / "eval.jsonl"
    evaluation.write_text(
        "".join(json.dumps(r) + "\n" for r in conversations(26)[20:]), encoding="utf-8"
    )
    model = build_tiny_model(root / "model", texts=data, seed=0)
    return model, train, evaluation


def _train(model: Path, train: Path, evaluation: Path, out: Path, **extra: Any) -> Any:
    params = {**PARAMS, **extra}
    trainer = LocalTrainer(model, output_dir=out, parameters=params, device="cpu")
    return trainer, trainer.train(train, validation=evaluation)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from phi_finetune.local.training import LocalTrainer
    model, train, evaluation, out, params, kill_after = sys.argv[1:7]
    import json
    def on_step(metrics):
        if metrics.step == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
    LocalTrainer(model, output_dir=out, parameters=json.loads(params), device="cpu",
                 on_step=on_step).train(train, validation=evaluation)
    """
)


def _train_and_kill(model: Path, train: Path, evaluation: Path, out: Path, kill_after: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(model),
            str(train),
            str(evaluation),
            str(out),
            json.dumps(PARAMS),
            str(kill_after),
        ],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    return done.returncode


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint_with_identical_losses(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, train, evaluation = setup
    _, whole = _train(model, train, evaluation, tmp_path / "whole")
    assert whole.steps == 15

    out = tmp_path / "killed"
    code = _train_and_kill(model, train, evaluation, out, kill_after=7)
    assert code == -signal.SIGKILL
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    # step-3, epoch-1 (step 5) and step-6 were written; nothing half-written is visible.
    assert names == ["epoch-1", "step-3", "step-6"]
    assert not (out / "merged").exists()

    steps_run: list[int] = []

    def count(metrics: StepMetrics) -> None:
        steps_run.append(metrics.step)

    trainer = LocalTrainer(
        model,
        output_dir=out,
        parameters={**PARAMS, "resume_from_checkpoint": "true"},
        device="cpu",
        on_step=count,
    )
    resumed = trainer.train(train, validation=evaluation)
    assert trainer.resumed_from == out / "checkpoints" / "step-6"
    assert resumed.resumed_from == out / "checkpoints" / "step-6"
    assert steps_run == list(range(7, 16))  # only the steps after the checkpoint ran again
    assert [m.loss for m in resumed.history] == [m.loss for m in whole.history]
    assert [m.learning_rate for m in resumed.history] == [m.learning_rate for m in whole.history]
    assert resumed.evaluations == whole.evaluations
    assert resumed.eval_loss == whole.eval_loss
    assert resumed.tokens_trained == whole.tokens_trained


@pytest.mark.slow
def test_checkpoints_of_other_settings_are_not_resumed(
    setup: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, train, evaluation = setup
    out = tmp_path / "out"
    _train(model, train, evaluation, out, max_steps="4")
    trainer, result = _train(
        model,
        train,
        evaluation,
        out,
        max_steps="4",
        learning_rate="0.02",
        resume_from_checkpoint="true",
    )
    assert result.resumed_from is None and trainer.resumed_from is None
    assert len(result.history) == 4
    assert "written for other settings" in caplog.text


def test_checkpoint_write_is_atomic_and_replaces_old(tmp_path: Path) -> None:
    class Saver:
        def __init__(self, text: str, fail: bool = False) -> None:
            self.text, self.fail = text, fail

        def save_pretrained(self, folder: Path) -> None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "weights.txt").write_text(self.text)
            if self.fail:
                raise RuntimeError("disk full (injected)")

    target = tmp_path / "checkpoints" / "step-3"
    target.parent.mkdir()
    ckpt.write_checkpoint(target, model=Saver("one"), tokenizer=Saver("one"), state={"step": 3})
    assert (target / "weights.txt").read_text() == "one"
    with pytest.raises(RuntimeError, match="injected"):
        ckpt.write_checkpoint(
            target, model=Saver("two", fail=True), tokenizer=Saver("two"), state={"step": 3}
        )
    # The failed write left the old checkpoint whole; its temporary folder is hidden.
    assert (target / "weights.txt").read_text() == "one"
    assert ckpt.read_state(target) == {"step": 3}
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == ["step-3"]
    ckpt.write_checkpoint(target, model=Saver("three"), tokenizer=Saver("three"), state={"step": 4})
    assert (target / "weights.txt").read_text() == "three"
    assert sorted(p.name for p in target.parent.iterdir()) == ["step-3"]


def test_prune_keeps_the_newest_step_checkpoints(tmp_path: Path) -> None:
    for step in (3, 6, 9, 12):
        (tmp_path / f"step-{step}").mkdir()
    (tmp_path / "epoch-1").mkdir()
    ckpt.prune_step_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1", "step-12", "step-9"]
    ckpt.prune_step_checkpoints(tmp_path, -1)
    assert len(list(tmp_path.iterdir())) == 3


SESSION_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from phi_finetune.local import training
    from phi_finetune.session import FineTuneSession
    sys.path.insert(0, sys.argv[3])
    from test_local_resume import session_config
    real_init = training.LocalTrainer.__init__
    def init(self, *args, **kwargs):
        def on_step(metrics):
            if metrics.step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)
        real_init(self, *args, **{**kwargs, "on_step": on_step})
    training.LocalTrainer.__init__ = init
    session = FineTuneSession.from_config(session_config(sys.argv[1]))
    print(session.run_id, flush=True)
    session.fine_tune()
    """
)


def session_config(root: str | Path) -> Any:
    """The demo's configuration with 8 steps and a checkpoint every 3."""
    import attrs

    from phi_finetune.cli.demo import demo_config

    config = demo_config(root, max_steps=8)
    return attrs.evolve(config, local=attrs.evolve(config.local, save_steps=3))


@pytest.mark.slow
def test_session_resume_continues_a_killed_fine_tune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.local import training
    from phi_finetune.session import FineTuneSession

    whole = FineTuneSession.from_config(session_config(tmp_path / "whole")).fine_tune()
    assert whole.training is not None and whole.training.steps == 8

    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SESSION_KILLER, str(root), "5", str(ROOT / "tests")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    run_id = done.stdout.split()[0]
    steps_run: list[int] = []
    real_init = training.LocalTrainer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **{**kwargs, "on_step": lambda m: steps_run.append(m.step)})

    monkeypatch.setattr(training.LocalTrainer, "__init__", init)
    resumed = FineTuneSession.resume(run_id, state_dir=root / "state")
    record = resumed.fine_tune()
    assert record.training is not None
    checkpoints = Path(record.training.adapter_dir).parent / "checkpoints"
    assert (checkpoints / "step-3").is_dir()
    assert steps_run == [4, 5, 6, 7, 8]  # continued after the step-3 checkpoint
    assert [h["loss"] for h in record.training.history] == [
        h["loss"] for h in whole.training.history
    ]
    assert record.training.final_loss == whole.training.final_loss
    assert record.training.eval_loss == whole.training.eval_loss
