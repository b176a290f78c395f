"""Benchmark: local LoRA training against HF Trainer (group_by_length) and TRL SFTTrainer.

Every trainer trains the same LoRA (r, alpha, Phi-3 target modules) on the same tiny
Phi-3-architecture test model, the same chat data with assistant-only labels, the same
sequence length, batch, steps, learning rate, schedule and seed:

- ``ours``: :class:`phi_finetune.local.training.LocalTrainer`;
- ``hf_group_by_length``: transformers ``Trainer`` + peft with
  ``train_sampling_strategy="group_by_length"`` (``group_by_length=True`` before transformers 5);
- ``trl_default`` / ``trl_padding_free`` / ``trl_packing``: TRL ``SFTTrainer`` on the same
  pre-tokenized examples with ``completion_mask`` = our assistant mask
  (``completion_only_loss=True``).

Every side starts from the same LoRA weights, runs fp32 with the same gradient checkpointing
setting and threads (``--threads``), and none clips gradients. TRL: ``bf16=False`` (its
default bf16 is emulated on this kind of CPU), ``padding_free`` with ``max_length=None`` (the
inputs are already truncated), ``packing`` with as many rows as hold the same tokens per step
(see :func:`training_anchors.trl_settings`).

Each (round, trainer) runs in a fresh process (so peak memory is its own); rounds are
interleaved and their order rotated. Timed region for all: from the end of step 3 to the end
of the last step (imports, loading, dataset preparation and warm-up are outside). Per
trainer: non-pad tokens/s, the held-out loss (one evaluation function for all), the peak RSS,
tokens per timed step, and the fraction of two fp32 matmul peaks measured in the same
process: a 1024^3 matmul and the model's own matmul shapes
(:func:`training_anchors.model_shape_peak_flops`); the useful FLOPs are in
:func:`training_anchors.useful_flops`. The table shows, against each anchor, the median of the
per-round speed ratios with min-max. ``--same-batches`` trains the anchors on LocalTrainer's
own batches in its order (equal work per step; the losses must match ours).

    python benchmarks/bench_local_training.py --rounds 3 --steps 20
    python benchmarks/bench_local_training.py --rounds 3 --steps 20 --model-vocab 32064
    python benchmarks/bench_local_training.py --same-batches --rounds 3
    python benchmarks/bench_local_training.py --memory     # gradient checkpointing on vs off

Goals (issue 17): >= 1.5x the best anchor at Phi-3 vocabulary and >= 1.2x on the tiny model,
>= 70% of the measured matmul peak, held-out loss within 1% of the anchors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import training_anchors as A

TRAINERS = ("ours", "hf_group_by_length", "trl_default", "trl_padding_free", "trl_packing")
SAME_BATCHES = ("ours", "hf_same_batches", "trl_same_batches")
WARM = 3
LR = 3e-3


def chat_data(n: int, seed: int) -> list[dict[str, Any]]:
    """Chat records with long-tailed lengths, like ultrachat (a few long, many short)."""
    rng = random.Random(seed)
    vocabulary = (
        "the a of to and in is it you that he was for on are with as I his they be at one have "
        "this from or had by hot word but what some we can out other were all there when up use "
        "your how said an each she which do their time if will way about many then them write"
    )
    words = vocabulary.split(" ")

    def text(mean: float) -> str:
        return " ".join(
            rng.choice(words) for _ in range(max(3, int(rng.lognormvariate(mean, 0.8))))
        )

    records = []
    for _ in range(n):
        messages = [
            {"role": "user", "content": text(3.0)},
            {"role": "assistant", "content": text(3.6)},
        ]
        if rng.random() < 0.3:
            messages += [
                {"role": "user", "content": text(2.5)},
                {"role": "assistant", "content": text(3.3)},
            ]
        records.append({"messages": messages})
    return records


# ----------------------------------------------------------------------------- one run


def run_one(name: str, work: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Train with ``name`` and measure; runs in its own process."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    from phi_finetune.local.evaluation import evaluation_loss
    from phi_finetune.local.examples import encode_examples, load_conversations
    from phi_finetune.local.model_loading import load_model_and_tokenizer

    torch.manual_seed(0)
    square_peak = A.square_peak_flops()
    model_dir = work / "model"
    train = load_conversations(work / "train.jsonl")
    held = load_conversations(work / "held_out.jsonl")
    _, tokenizer = load_model_and_tokenizer(model_dir)
    examples, _ = encode_examples(tokenizer, train, spec["max_seq_length"])
    eval_examples, _ = encode_examples(tokenizer, held, spec["max_seq_length"])
    step_ends: list[float] = []
    steps: list[dict[str, int]] = []
    losses: list[float] = []
    if name == "ours":
        model = _train_ours(model_dir, work, spec, step_ends, steps, losses)
    else:
        model = _train_anchor(name, model_dir, tokenizer, examples, spec, step_ends, steps, losses)
    # Steady state: from the end of step WARM to the end of the last step. Everything before
    # (imports, model load, dataset preparation, the first WARM steps) is outside for all.
    seconds = step_ends[-1] - step_ends[WARM - 1]
    steady = steps[WARM : len(step_ends)]
    tokens = sum(s["tokens"] for s in steady)
    sizes = A.model_sizes(model)
    flops = A.useful_flops(sizes, steady)
    typical = sorted(steady, key=lambda s: s["tokens"])[len(steady) // 2]
    shape_peak = A.model_shape_peak_flops(model, typical)
    loss = evaluation_loss(
        model, eval_examples, 16, int(tokenizer.pad_token_id), "cpu", _null_context
    )
    return {
        "trainer": name,
        "tokens_per_s": tokens / seconds,
        "achieved_flops": flops / seconds,
        "square_peak_flops": square_peak,
        "shape_peak_flops": shape_peak,
        "peak_fraction": flops / seconds / square_peak,
        "shape_peak_fraction": flops / seconds / shape_peak,
        "held_out_loss": loss,
        "train_losses": losses,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": len(step_ends),
        "tokens_per_step": tokens / max(1, len(steady)),
        "threads": torch.get_num_threads(),
    }


def _null_context() -> Any:
    import contextlib

    return contextlib.nullcontext()


def our_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """``LocalTrainer``'s parameters for a benchmark ``spec`` (steps, batch, max_seq_length)."""
    return {
        "max_steps": spec["steps"],
        "per_device_train_batch_size": spec["batch"],
        "learning_rate": LR,
        "lr_scheduler_type": "linear",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "max_seq_length": spec["max_seq_length"],
        "seed": 0,
        "merge_lora_weights": False,
        "save_steps": 0,
        "evaluation_strategy": "disable",
        "gradient_checkpointing": spec.get("gradient_checkpointing", False),
    }


def _train_ours(
    model_dir: Path,
    work: Path,
    spec: dict[str, Any],
    ends: list[float],
    steps: list[dict[str, int]],
    losses: list[float],
) -> Any:
    from phi_finetune.local import training

    real_step = training.LocalTrainer._optimizer_step

    def step(self: Any, run: Any, group: Any, epoch: float) -> Any:
        ex = run.examples
        indices = [i for b in group for i in b]
        steps.append(
            A.step_stats([len(ex[i][0]) for i in indices], sum(sum(ex[i][1][1:]) for i in indices))
        )
        return real_step(self, run, group, epoch)

    training.LocalTrainer._optimizer_step = step  # type: ignore[method-assign]
    params = our_parameters(spec)

    def on_step(m: Any) -> None:
        ends.append(time.perf_counter())
        losses.append(m.loss)

    trainer = training.LocalTrainer(
        model_dir, output_dir=work / "out-ours", parameters=params, device="cpu", on_step=on_step
    )
    trainer.train(work / "train.jsonl")
    return trainer.model


def _train_anchor(
    name: str,
    model_dir: Path,
    tokenizer: Any,
    examples: list[Any],
    spec: dict[str, Any],
    ends: list[float],
    steps: list[dict[str, int]],
    losses: list[float],
) -> Any:
    import collections

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerCallback

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=A.TARGETS
    )
    # Seeded right before the adapters are made, as LocalTrainer does: the same initial LoRA
    # weights (loading the model draws from the generator).
    torch.manual_seed(0)
    model = get_peft_model(base, lora)
    if spec.get("gradient_checkpointing"):
        base.config.use_cache = False
    collated: collections.deque[dict[str, int]] = collections.deque()
    same_batches = name.endswith("_same_batches")
    if same_batches:  # LocalTrainer's own batches, in its order
        order = A.our_batch_order(examples, spec["batch"], spec["steps"])
        examples = [examples[i] for b in order for i in b]

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())
            # Dataloaders may collate a batch ahead: step k trained on the k-th batch collated.
            steps.append(collated.popleft())

        def on_log(self, *a: Any, logs: Any = None, **k: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    common = {
        "output_dir": str(model_dir.parent / f"out-{name}"),
        "max_steps": spec["steps"],
        "per_device_train_batch_size": spec["batch"],
        "learning_rate": LR,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        # LocalTrainer does not clip gradients; Trainer's default clips at 1.0.
        "max_grad_norm": 0.0,
        "seed": 0,
        "report_to": [],
        "save_strategy": "no",
        # Per-step training loss only when comparing losses (logging costs a sync per step).
        "logging_steps": 1 if same_batches else 10_000,
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "gradient_checkpointing": bool(spec.get("gradient_checkpointing", False)),
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "train_sampling_strategy": "sequential" if same_batches else "group_by_length",
    }
    if name.startswith("hf_"):
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        features = [
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [i if m else -100 for i, m in zip(ids, mask, strict=True)],
            }
            for ids, mask in examples
        ]
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)

        def counting(batch: list[dict[str, Any]]) -> Any:
            out = collator(batch)
            collated.append(A.collated_stats(out))
            return out

        args = TrainingArguments(**common, remove_unused_columns=False)
        trainer: Any = Trainer(
            model=model,
            args=args,
            train_dataset=features,
            data_collator=counting,
            callbacks=[Timer()],
        )
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list(
            [
                {"input_ids": ids, "completion_mask": [int(m) for m in mask]}
                for ids, mask in examples
            ]
        )
        trl_kwargs = A.trl_settings(name, spec, examples)
        config = SFTConfig(**{**common, **trl_kwargs})
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[Timer()],
        )
        inner = trainer.data_collator

        def counting_sft(batch: list[dict[str, Any]]) -> Any:
            out = inner(batch)
            collated.append(A.collated_stats(out))
            return out

        trainer.data_collator = counting_sft
    trainer.train()
    return model


# ----------------------------------------------------------------------------- the driver


def prepare(args: argparse.Namespace, work: Path | None = None) -> Path:
    """The data, held-out set and model all trainers use (in ``work``, else a new temp dir)."""
    import torch
    from transformers import AutoModelForCausalLM

    from phi_finetune.local.tiny_model import build_tiny_model

    work = work or Path(tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    data = chat_data(args.examples, seed=0)
    for name, rows in (("train", data), ("held_out", chat_data(64, seed=1))):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (work / f"{name}.jsonl").write_text(text, encoding="utf-8")
    model_dir = build_tiny_model(
        work / "model", texts=data, hidden_size=args.hidden, num_layers=args.layers, vocab_size=1024
    )
    if args.model_vocab:
        # Like Phi-3 (32,011 tokens, 32,064 embedding rows): the LM head costs as much as the
        # real model's does relative to its layers.
        padded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        padded.resize_token_embeddings(args.model_vocab)
        padded.save_pretrained(model_dir)
    return work


def spawn(name: str, work: Path, spec: dict[str, Any]) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--work",
        str(work),
        "--spec",
        json.dumps(spec),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        return {"trainer": name, "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--model-vocab", type=int, default=None, help="Phi-3: 32064")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--trainers", default=None)
    parser.add_argument("--memory", action="store_true", help="gradient checkpointing on vs off")
    parser.add_argument(
        "--same-batches",
        action="store_true",
        help="loss equivalence: the anchors train on LocalTrainer's own batches, in its order",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.work), json.loads(args.spec))))
        return 0
    spec = {
        "steps": args.steps,
        "batch": args.batch,
        "max_seq_length": args.max_seq_length,
        "threads": args.threads,
    }
    work = prepare(args)
    default = "ours,hf_group_by_length" if args.memory else ",".join(TRAINERS)
    if args.same_batches:
        default = ",".join(SAME_BATCHES)
    names = (args.trainers or default).split(",")
    if args.memory:
        return memory(work, spec, names, args.rounds)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        rounds.append({name: spawn(name, work, spec) for name in order})
    report(rounds, names, args, work)
    if args.same_batches:
        report_losses(rounds[0], names)
    return 0


def memory(work: Path, spec: dict[str, Any], names: list[str], rounds: int) -> int:
    """Peak RSS with gradient checkpointing off and on, per trainer (median of rounds)."""
    runs = [(name, gc) for name in names for gc in (False, True)]
    results: dict[tuple[str, bool], list[dict[str, Any]]] = {run: [] for run in runs}
    for r in range(rounds):
        for name, gc in runs[r % len(runs) :] + runs[: r % len(runs)]:
            results[(name, gc)].append(spawn(name, work, {**spec, "gradient_checkpointing": gc}))
    print("| trainer | gradient_checkpointing | peak RSS MB | tokens/s | held-out loss |")
    print("|---|---|---|---|---|")
    for name, gc in runs:
        ok = [row for row in results[(name, gc)] if "error" not in row]
        if not ok:
            print(f"| {name} | {gc} | failed: {results[(name, gc)][0]['error']} | | |")
            continue
        rss = statistics.median(row["peak_rss_mb"] for row in ok)
        speed = statistics.median(row["tokens_per_s"] for row in ok)
        loss = statistics.median(row["held_out_loss"] for row in ok)
        print(f"| {name} | {gc} | {rss:,.0f} | {speed:,.0f} | {loss:.4f} |")
    return 0


def report(
    rounds: list[dict[str, dict[str, Any]]], names: list[str], args: Any, work: Path
) -> None:
    def med(name: str, key: str) -> float:
        values = [r[name][key] for r in rounds if key in r[name]]
        return statistics.median(values) if values else float("nan")

    threads = med(names[0], "threads")
    config = json.loads((work / "model" / "config.json").read_text(encoding="utf-8"))
    print(
        f"model: tiny Phi-3 hidden={args.hidden} layers={args.layers} "
        f"vocabulary rows={config['vocab_size']}; {args.steps} steps, batch {args.batch}, "
        f"max_seq_length {args.max_seq_length}, {args.rounds} interleaved rounds, "
        f"{threads:.0f} torch threads; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        "| trainer | tokens/s (median) | ours / it: median (min-max) | fraction of 1024^3 "
        "peak | fraction of model-shape peak | held-out loss (vs ours) | peak RSS MB "
        "| tokens/step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ours_loss = med("ours", "held_out_loss") if "ours" in names else float("nan")
    for name in names:
        errors = [r[name]["error"] for r in rounds if "error" in r[name]]
        if errors:
            print(f"| {name} | failed: {errors[0]} | | | | | | |")
            continue
        ratios = [
            r["ours"]["tokens_per_s"] / r[name]["tokens_per_s"]
            for r in rounds
            if "tokens_per_s" in r.get("ours", {})
        ]
        mid, low, high = A.ratio_summary(ratios) if ratios else (float("nan"),) * 3
        loss = med(name, "held_out_loss")
        print(
            f"| {name} | {med(name, 'tokens_per_s'):,.0f} | {mid:.2f}x ({low:.2f}-{high:.2f}) "
            f"| {med(name, 'peak_fraction'):.2f} | {med(name, 'shape_peak_fraction'):.2f} "
            f"| {loss:.4f} ({(loss / ours_loss - 1) * 100:+.2f}%) "
            f"| {med(name, 'peak_rss_mb'):,.0f} | {med(name, 'tokens_per_step'):,.0f} |"
        )
    per_step = [med(name, "tokens_per_step") for name in names]
    if per_step and max(per_step) > 1.1 * min(per_step):
        print(
            "note: the timed steps hold different numbers of tokens per trainer (different batch "
            "composition); larger batches run faster per token. Use --steps of a whole epoch "
            "or --same-batches for a per-token comparison free of that."
        )
    print(
        f"peaks (median): 1024^3 matmul {med(names[0], 'square_peak_flops') / 1e9:.1f} GFLOP/s, "
        f"the model's own matmul shapes {med(names[0], 'shape_peak_flops') / 1e9:.1f} GFLOP/s"
    )
    if args.json:
        print(json.dumps(rounds, indent=2))


def report_losses(first: dict[str, dict[str, Any]], names: list[str]) -> None:
    """Per-step training losses of the first round: the same batches must give the same loss."""
    ours = first["ours"].get("train_losses", [])
    for name in names[1:]:
        theirs = first[name].get("train_losses", [])
        if not ours or not theirs:
            print(f"{name}: no per-step losses")
            continue
        worst = max(abs(a / b - 1) for a, b in zip(ours, theirs, strict=False))
        print(
            f"{name}: {len(theirs)} steps, largest per-step training-loss difference to ours "
            f"{worst * 100:.3f}%; first {theirs[0]:.4f} vs {ours[0]:.4f}, "
            f"last {theirs[-1]:.4f} vs {ours[-1]:.4f}"
        )


if __name__ == "__main__":
    sys.exit(main())
