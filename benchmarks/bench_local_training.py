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

Each (round, trainer) runs in a fresh process (so peak memory is its own); rounds are
interleaved and their order rotated. Per trainer: steady-state non-pad tokens/s (first 3 steps
excluded), the held-out loss (the same evaluation code for all), the peak RSS, and the fraction
of a torch fp32 matmul peak measured in the same process. FLOPs per step count, per non-pad
token, 4 x frozen body weights + 6 x LoRA weights + attention, and 4 x the LM head per scored
token (the physical minimum; padding, packing overhead and scoring unscored positions are
waste). The table shows, against each anchor, the median of the per-round speed ratios with
min-max.

    python benchmarks/bench_local_training.py --rounds 3 --steps 20
    python benchmarks/bench_local_training.py --rounds 3 --steps 20 --model-vocab 32064
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
from typing import Any, ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAINERS = ("ours", "hf_group_by_length", "trl_default", "trl_padding_free", "trl_packing")
WARM = 3
LR = 3e-3
TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


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


def matmul_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s of this process (the 'physical limit' the fraction is of)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def useful_flops(model: Any, examples: list[Any], steps_batches: list[list[int]]) -> float:
    """FLOPs of the scored work of the given batches (see the module docstring)."""
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    body = sum(
        p.numel()
        for n, p in model.named_parameters()
        if "lora_" not in n and "embed_tokens" not in n and "lm_head" not in n
    )
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    total = 0.0
    for batch in steps_batches:
        for i in batch:
            ids, mask = examples[i]
            n = len(ids)
            scored = sum(mask[1:])
            # attention scores + values, causal (half), forward + backward (x3)
            attention = 3 * 2 * 2 * layers * h * n * n / 2
            total += n * (4 * body + 6 * lora) + attention + scored * 4 * h * vocab
    return total


def run_one(name: str, work: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Train with ``name`` and measure; runs in its own process."""
    import torch

    from phi_finetune.local.evaluation import evaluation_loss
    from phi_finetune.local.examples import encode_examples, load_conversations
    from phi_finetune.local.model_loading import load_model_and_tokenizer

    torch.manual_seed(0)
    peak = matmul_peak_flops()
    model_dir = work / "model"
    train = load_conversations(work / "train.jsonl")
    held = load_conversations(work / "held_out.jsonl")
    _, tokenizer = load_model_and_tokenizer(model_dir)
    examples, _ = encode_examples(tokenizer, train, spec["max_seq_length"])
    eval_examples, _ = encode_examples(tokenizer, held, spec["max_seq_length"])
    step_ends: list[float] = []
    step_tokens: list[int] = []
    if name == "ours":
        model, batches = _train_ours(model_dir, work, spec, step_ends, step_tokens)
    else:
        model, batches = _train_anchor(
            name, model_dir, tokenizer, examples, spec, step_ends, step_tokens
        )
    # Steady state: from the end of step WARM to the end of the last step.
    seconds = step_ends[-1] - step_ends[WARM - 1]
    tokens = sum(step_tokens[WARM:])
    flops = useful_flops(model, examples, batches[WARM:]) if batches else float("nan")
    loss = evaluation_loss(
        model, eval_examples, 16, int(tokenizer.pad_token_id), "cpu", _null_context
    )
    return {
        "trainer": name,
        "tokens_per_s": tokens / seconds,
        "achieved_flops": flops / seconds,
        "matmul_peak_flops": peak,
        "peak_fraction": flops / seconds / peak,
        "held_out_loss": loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": len(step_ends),
    }


def _null_context() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _train_ours(
    model_dir: Path, work: Path, spec: dict[str, Any], ends: list[float], tokens: list[int]
) -> tuple[Any, list[list[int]]]:
    from phi_finetune.local import training

    batches: list[list[int]] = []
    real_step = training.LocalTrainer._optimizer_step

    def step(self: Any, run: Any, group: Any, epoch: float) -> Any:
        batches.extend(list(b) for b in group)
        return real_step(self, run, group, epoch)

    training.LocalTrainer._optimizer_step = step  # type: ignore[method-assign]
    params = {
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

    def on_step(m: Any) -> None:
        ends.append(time.perf_counter())
        tokens.append(m.tokens)

    trainer = training.LocalTrainer(
        model_dir, output_dir=work / "out-ours", parameters=params, device="cpu", on_step=on_step
    )
    trainer.train(work / "train.jsonl")
    return trainer.model, batches


def _train_anchor(
    name: str,
    model_dir: Path,
    tokenizer: Any,
    examples: list[Any],
    spec: dict[str, Any],
    ends: list[float],
    tokens: list[int],
) -> tuple[Any, list[list[int]]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerCallback

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=TARGETS
    )
    model = get_peft_model(base, lora)
    counted: list[int] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        seen: ClassVar[int] = 0

        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())
            tokens.append(sum(counted[Timer.seen :]))
            Timer.seen = len(counted)

    common = {
        "output_dir": str(model_dir.parent / f"out-{name}"),
        "max_steps": spec["steps"],
        "per_device_train_batch_size": spec["batch"],
        "learning_rate": LR,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "seed": 0,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 10_000,
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }
    if name == "hf_group_by_length":
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
            counted.append(int(out["attention_mask"].sum()))
            return out

        args = TrainingArguments(
            **common,
            remove_unused_columns=False,
            train_sampling_strategy="group_by_length",
        )
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
        config = SFTConfig(
            **common,
            max_length=spec["max_seq_length"],
            completion_only_loss=True,
            padding_free=name == "trl_padding_free",
            packing=name == "trl_packing",
        )
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
            labels = out["labels"]
            if "attention_mask" in out:
                counted.append(int(out["attention_mask"].sum()))
            else:  # padding-free: one row, no pads
                counted.append(int(labels.numel()))
            return out

        trainer.data_collator = counting_sft
    trainer.train()
    # Useful FLOPs are counted on the same examples: the anchors draw other batches of the same
    # data, so the mean work per example is the fair figure (scaled to the tokens they saw).
    per_token_batches = _batches_like(examples, tokens, WARM)
    return model, per_token_batches


def _batches_like(examples: list[Any], tokens: list[int], warm: int) -> list[list[int]]:
    """Example index lists whose non-pad token count matches each step's (for FLOP counting)."""
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    batches: list[list[int]] = []
    k = 0
    for count in tokens:
        batch: list[int] = []
        seen = 0
        while seen < count:
            i = order[k % len(order)]
            k += 1
            batch.append(i)
            seen += len(examples[i][0])
        batches.append(batch)
    return batches


# ----------------------------------------------------------------------------- the driver


def prepare(args: argparse.Namespace) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from phi_finetune.local.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
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
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--memory", action="store_true", help="gradient checkpointing on vs off")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.work), json.loads(args.spec))))
        return 0
    spec = {"steps": args.steps, "batch": args.batch, "max_seq_length": args.max_seq_length}
    work = prepare(args)
    if args.memory:
        rows = [
            {**spawn("ours", work, {**spec, "gradient_checkpointing": gc}), "gc": gc}
            for gc in (False, True)
        ]
        for row in rows:
            rss = row.get("peak_rss_mb", 0)
            print(
                f"gradient_checkpointing={row['gc']!s:5}  peak RSS {rss:7.0f} MB"
                f"  {row.get('tokens_per_s', 0):8.0f} tokens/s  held-out loss "
                f"{row.get('held_out_loss', float('nan')):.4f}"
            )
        return 0
    names = args.trainers.split(",")
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        rounds.append({name: spawn(name, work, spec) for name in order})
    report(rounds, names, args)
    return 0


def report(rounds: list[dict[str, dict[str, Any]]], names: list[str], args: Any) -> None:
    def med(name: str, key: str) -> float:
        values = [r[name][key] for r in rounds if key in r[name]]
        return statistics.median(values) if values else float("nan")

    print(
        f"model: tiny Phi-3 hidden={args.hidden} layers={args.layers} "
        f"vocab rows={args.model_vocab or 1024}; {args.steps} steps, batch {args.batch}, "
        f"max_seq_length {args.max_seq_length}, {args.rounds} interleaved rounds"
    )
    print(
        "| trainer | tokens/s (median) | ours / it: median (min-max) | fraction of matmul peak "
        "| held-out loss | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    for name in names:
        errors = [r[name]["error"] for r in rounds if "error" in r[name]]
        if errors:
            print(f"| {name} | failed: {errors[0]} | | | | |")
            continue
        ratios = [r["ours"]["tokens_per_s"] / r[name]["tokens_per_s"] for r in rounds]
        print(
            f"| {name} | {med(name, 'tokens_per_s'):,.0f} | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {med(name, 'peak_fraction'):.2f} "
            f"| {med(name, 'held_out_loss'):.4f} | {med(name, 'peak_rss_mb'):,.0f} |"
        )
    if args.json:
        print(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    sys.exit(main())
