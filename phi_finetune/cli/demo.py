"""``phi-finetune demo``: the whole workflow on the local backend, offline, on demo data.

Uses the built-in tiny **test** model (not a real language model: its replies are not meant to
be good) and the demo conversations shipped with the package. Leaves no process running.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from phi_finetune.cli._common import emit, say


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the whole workflow locally on demo data with a tiny test model"
    )
    parser.add_argument(
        "--workdir", default="phi-finetune-demo", help="folder for data, model, journal"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="cap training steps")
    parser.set_defaults(handler=handle)


def demo_config(workdir: str | Path, *, max_steps: int | None = None) -> Any:
    """The demo's run configuration (local backend, shipped demo data, tiny test model)."""
    from phi_finetune.config import DataConfig, FinetuneConfig, LocalConfig, RunConfig

    root = Path(workdir)
    return RunConfig(
        backend="local",
        state_dir=str(root / "state"),
        data=DataConfig(source="demo", split_pc=None, output_dir=str(root / "data")),
        # The reference's learning rate (5e-6) is tuned for a 3.8B model; the tiny random test
        # model needs a larger one, and ~200 steps (a few seconds), to visibly learn.
        finetune=FinetuneConfig(parameters=DEMO_PARAMETERS),
        # The endpoint's imports run beside training: deploy then only loads the model.
        local=LocalConfig(max_steps=max_steps, prestart_server=True),
    )


#: Fine-tuning parameters of the demo (pipeline input names, as on Azure).
DEMO_PARAMETERS = {
    "num_train_epochs": 20,
    "learning_rate": 1e-2,
    "per_device_train_batch_size": 4,
    "lora_r": 16,
    "lora_alpha": 32,
    "max_seq_length": 512,
}


def handle(args: argparse.Namespace) -> int:
    from phi_finetune.session import FineTuneSession

    config = demo_config(args.workdir, max_steps=args.max_steps)
    session = FineTuneSession.from_config(config)
    say(args, f"phi_finetune demo: run {session.run_id}, journal in {session.run_dir}")
    timings: dict[str, float] = {}
    learned: dict[str, float] = {}
    try:
        for label, step in (
            ("prepare data", session.prepare_data),
            ("plan", session.plan),
            ("fine-tune (LoRA)", session.fine_tune),
            ("register (MLflow)", session.register),
            ("deploy (local HTTP endpoint)", session.deploy),
            ("score a held-out prompt", session.score_sample),
        ):
            start = time.monotonic()
            say(args, f"==> {label}")
            out = step()
            timings[label] = round(time.monotonic() - start, 2)
            say(args, f"    {_describe(label, out)} ({timings[label]} s)")
            if label.startswith("fine-tune"):
                learned = _loss_before_after(out)
                if learned:
                    say(args, "    " + _describe_learning(learned))
    finally:
        start = time.monotonic()
        say(args, "==> teardown")
        deleted = session.teardown()
        timings["teardown"] = round(time.monotonic() - start, 2)
        say(args, f"    deleted: {', '.join(deleted) or 'nothing'} ({timings['teardown']} s)")
    result = session.result()
    request = result.request
    text = "\n".join(
        [
            "sample request (sample_score.json):",
            json.dumps(request, indent=2)[:2000],
            "",
            _describe_learning(learned) if learned else "",
            f"model reply: {result.reply!r}",
            "(the demo's tiny test model is not a real language model: a few seconds of",
            " training teach it words of the demo data, not fluent answers)",
            "",
            "where the time went: " + ", ".join(f"{k} {v} s" for k, v in timings.items()),
        ]
    )
    emit(
        args,
        {
            "run_id": result.run_id,
            "request": request,
            "reply": result.reply,
            "timings": timings,
            "training_loss": learned,
        },
        text,
    )
    return 0


def _loss_before_after(job: Any) -> dict[str, float]:
    """The training loss before (first step) and after (mean of the last 10 steps)."""
    training = getattr(job, "training", None)
    losses = [float(h["loss"]) for h in getattr(training, "history", ()) if "loss" in h]
    if len(losses) < 2:
        return {}
    after = sum(losses[-10:]) / len(losses[-10:])
    return {"before": losses[0], "after": after, "drop": 1 - after / losses[0]}


def _describe_learning(learned: dict[str, float]) -> str:
    return (
        f"training loss: {learned['before']:.2f} before (step 1) -> {learned['after']:.2f} "
        f"after (mean of the last 10 steps): {learned['drop']:.0%} lower"
    )


def _describe(label: str, out: Any) -> str:
    from phi_finetune.steps import RECORD_TYPES

    if not isinstance(out, tuple(RECORD_TYPES.values())):
        return f"endpoint {getattr(out, 'name', out)} at {getattr(out, 'scoring_uri', '?')}"
    record: Any = out
    values: dict[str, Any] = record.to_dict()
    training = values.pop("training", None) or {}  # the local training's loss figures
    out = {**values, **training}
    keys = (
        "counts",
        "display_name",
        "final_loss",
        "eval_loss",
        "name",
        "version",
        "reply",
    )
    shown = {k: out[k] for k in keys if k in out}
    text = ", ".join(f"{k}={v}" for k, v in shown.items()) or "done"
    return text if len(text) <= 160 else text[:157] + "..."
