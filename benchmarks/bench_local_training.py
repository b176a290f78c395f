"""Benchmark: local LoRA training throughput vs transformers Trainer + peft (same run).

Both train the same LoRA (r, alpha, target modules) on the same tiny Phi-3-architecture test
model, the same chat data (assistant-only labels) and the same number of optimizer steps,
batch size, learning rate and seed. The baseline pads each random batch to its longest example
(``DataCollatorForSeq2Seq``, the usual dynamic padding). Throughput counts real (non-pad)
tokens per second of training-loop wall time; the final loss is the held-out loss per
assistant token, computed the same way for both.

    python benchmarks/bench_local_training.py            # quick: 30 steps
    python benchmarks/bench_local_training.py --steps 100 --hidden 256
    python benchmarks/bench_local_training.py --hidden 256 --layers 4 --model-vocab 32064

Goal: >= 2x the baseline's tokens/s with a final loss no worse. The goal is judged on the
steady state (first 3 steps of each excluded: one-off set-up); the all-steps figures are
printed too. On a shared 2-core CPU, run it twice and expect noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument(
        "--model-vocab",
        type=int,
        default=None,
        help="pad the embedding/LM-head rows to this size (Phi-3: 32064; default: tokenizer's)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from phi_finetune.local.tiny_model import build_tiny_model
    from phi_finetune.local.training import LocalTrainer, load_model_and_tokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = chat_data(args.examples, seed=0)
    held_out = chat_data(64, seed=1)
    model_dir = build_tiny_model(
        work / "model", texts=data, hidden_size=args.hidden, num_layers=args.layers, vocab_size=1024
    )
    if args.model_vocab:
        # Like Phi-3 (32,011 tokens, 32,064 embedding rows): the LM head costs as much as the
        # real model's does relative to its layers.
        padded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        padded.resize_token_embeddings(args.model_vocab)
        padded.save_pretrained(model_dir)
    params = {
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "per_device_eval_batch_size": 16,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "max_seq_length": args.max_seq_length,
        "seed": 0,
        "merge_lora_weights": False,
    }

    # ---- ours
    ours = LocalTrainer(model_dir, output_dir=work / "ours", parameters=params, device="cpu")
    t0 = time.perf_counter()
    result = ours.train(data)
    ours_wall = time.perf_counter() - t0
    ours_loop_s = sum(m.tokens / m.tokens_per_s for m in result.history if m.tokens_per_s)
    ours_tps = result.tokens_trained / ours_loop_s

    # ---- encoded examples, shared by the baseline and the loss evaluation
    _, tokenizer = load_model_and_tokenizer(model_dir)
    train_examples, _ = ours._encode(tokenizer, [r["messages"] for r in data], args.max_seq_length)
    eval_examples, _ = ours._encode(
        tokenizer, [r["messages"] for r in held_out], args.max_seq_length
    )
    pad_id = int(tokenizer.pad_token_id)
    ours_eval = ours.evaluate(ours.model, eval_examples, pad_id, "cpu", contextlib.nullcontext)

    # ---- baseline: transformers Trainer + peft, default dynamic padding
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    )
    peft_model = get_peft_model(base, lora)
    features = [
        {
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": [i if m else -100 for i, m in zip(ids, mask, strict=True)],
        }
        for ids, mask in train_examples
    ]
    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    counted = {"tokens": 0}
    per_batch: list[int] = []

    def counting_collator(batch: list[dict[str, Any]]) -> Any:
        out = collator(batch)
        counted["tokens"] += int(out["attention_mask"].sum())
        per_batch.append(int(out["attention_mask"].sum()))
        return out

    class Timer(TrainerCallback):  # type: ignore[misc]
        start = 0.0
        end = 0.0
        step_ends: ClassVar[list[float]] = []

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            Timer.start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            Timer.step_ends.append(time.perf_counter())

        def on_train_end(self, *a: Any, **k: Any) -> None:
            Timer.end = time.perf_counter()

    training_args = TrainingArguments(
        output_dir=str(work / "baseline"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=3e-3,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        seed=0,
        report_to=[],
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=peft_model,
        args=training_args,
        train_dataset=features,
        data_collator=counting_collator,
        callbacks=[Timer()],
    )
    trainer.train()
    base_s = Timer.end - Timer.start
    base_tps = counted["tokens"] / base_s
    # Steady state: skip the first WARM steps of each (first-step set-up, lazy imports).
    warm = min(3, args.steps - 1)
    base_steady_tps = sum(per_batch[warm + 1 : args.steps]) / (
        Timer.step_ends[-1] - Timer.step_ends[warm]
    )
    steady = result.history[warm:]
    ours_steady_tps = sum(m.tokens for m in steady) / sum(m.tokens / m.tokens_per_s for m in steady)
    base_eval = ours.evaluate(peft_model, eval_examples, pad_id, "cpu", contextlib.nullcontext)

    figures = {
        "steps": args.steps,
        "batch": args.batch,
        "model": f"tiny Phi-3 hidden={args.hidden} layers={args.layers} "
        f"vocab rows={args.model_vocab or 'tokenizer'}",
        "ours_tokens_per_s": round(ours_tps),
        "ours_loop_s": round(ours_loop_s, 2),
        "ours_total_s_incl_load_and_encode": round(ours_wall, 2),
        "ours_nonpad_tokens": result.tokens_trained,
        "baseline_tokens_per_s": round(base_tps),
        "baseline_train_s": round(base_s, 2),
        "baseline_nonpad_tokens": counted["tokens"],
        "speedup": round(ours_tps / base_tps, 2),
        "ours_steady_tokens_per_s": round(ours_steady_tps),
        "baseline_steady_tokens_per_s": round(base_steady_tps),
        "steady_speedup": round(ours_steady_tps / base_steady_tps, 2),
        "ours_final_eval_loss": round(float(ours_eval or 0), 4),
        "baseline_final_eval_loss": round(float(base_eval or 0), 4),
        "ours_last_train_loss": round(result.history[-1].loss, 4),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:36s} {value}")
        ok = (
            figures["steady_speedup"] >= 2
            and figures["ours_final_eval_loss"] <= figures["baseline_final_eval_loss"] * 1.01
        )
        print("goal (>= 2x tokens/s, final loss no worse):", "MET" if ok else "NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
