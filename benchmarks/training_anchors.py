"""Helpers of ``bench_local_training.py``: the anchors' set-up, FLOP counting and the peaks.

Kept apart from the driver so that the pure parts (:func:`step_stats`, :func:`useful_flops`,
:func:`ratio_summary`) can be tested without training anything.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]

# ----------------------------------------------------------------------------- statistics


def ratio_summary(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of per-round ratios."""
    return statistics.median(values), min(values), max(values)


# ----------------------------------------------------------------------------- FLOPs


def step_stats(lengths: Sequence[int], scored: int) -> dict[str, int]:
    """What one step's useful FLOPs depend on: real tokens, scored tokens, sum of n^2."""
    return {
        "tokens": sum(lengths),
        "scored": scored,
        "sum_sq": sum(n * n for n in lengths),
        "sequences": len(lengths),
    }


def model_sizes(model: Any) -> dict[str, int]:
    """Frozen body weights, LoRA weights, hidden size, layers and LM-head rows of ``model``."""
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    named = list(model.named_parameters())
    lora = sum(p.numel() for n, p in named if "lora_" in n)
    body = sum(
        p.numel()
        for n, p in named
        if "lora_" not in n and "embed_tokens" not in n and "lm_head" not in n and p.dim() == 2
    )
    return {
        "body": body,
        "lora": lora,
        "hidden": int(config.hidden_size),
        "layers": int(config.num_hidden_layers),
        "vocab": int(model.get_output_embeddings().weight.shape[0]),
    }


def useful_flops(sizes: dict[str, int], steps: Sequence[dict[str, int]]) -> float:
    """The physical minimum of FLOPs for ``steps`` (forward + backward, fp32 matmuls).

    Per real token: 4 x frozen weight (forward 2, input gradient 2) + 6 x LoRA weight (also
    the weight gradient 2); per sequence of n tokens and layer: causal attention scores and
    values, 2 x 2 x n^2 x hidden / 2 forward, x 3 with the backward; per scored token (one
    that predicts an assistant token): 4 x hidden x LM-head rows. Norms, activations and the
    optimizer are not matmuls and not counted.
    """
    h, layers, vocab = sizes["hidden"], sizes["layers"], sizes["vocab"]
    total = 0.0
    for s in steps:
        total += s["tokens"] * (4 * sizes["body"] + 6 * sizes["lora"])
        total += 6 * layers * h * s["sum_sq"]
        total += 4 * h * vocab * s["scored"]
    return total


def square_peak_flops(n: int = 1024, repeats: int = 10) -> float:
    """Best fp32 FLOP/s of an n x n x n matmul in this process (its threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def model_shape_peak_flops(model: Any, step: dict[str, int], repeats: int = 5) -> float:
    """Best FLOP/s of the matmuls one step of this model needs, at their real shapes.

    For a step with ``tokens`` real tokens in ``sequences`` sequences and ``scored`` scored
    ones: every frozen linear's forward and input-gradient matmul, both LoRA matmuls with
    their input and weight gradients, causal attention as batched matmuls (mean sequence
    length) and the LM head on the scored positions, each timed alone (best of
    ``repeats``). The sum of their best times is a floor for the step's matmul time, so
    ``useful FLOPs / that time`` is the ceiling a trainer can reach on this model here.
    """
    import torch

    sizes = model_sizes(model)
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    t, scored = max(1, step["tokens"]), max(1, step["scored"])
    seqs = max(1, step["sequences"])
    n = max(1, round(t / seqs))
    heads = int(config.num_attention_heads)
    d = sizes["hidden"] // heads
    shapes: list[tuple[int, int, int, int]] = []  # (batch, m, k, n): batch x (m,k)@(k,n)
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2 or "embed" in name or "lm_head" in name:
            continue
        out_f, in_f = weight.shape
        if "lora_A" in name or "lora_B" in name:
            shapes += [(1, t, in_f, out_f), (1, t, out_f, in_f), (1, out_f, t, in_f)]
        else:
            shapes += [(1, t, in_f, out_f), (1, t, out_f, in_f)]
    # attention: scores (n,d)@(d,n) and values (n,n)@(n,d), forward and 2 backward each
    attention = [(seqs * heads, n, d, n), (seqs * heads, n, n, d)] * 3 * sizes["layers"]
    h, v = sizes["hidden"], sizes["vocab"]
    head = [(1, scored, h, v), (1, scored, v, h)]
    seconds = 0.0
    flops = 0.0
    timed: dict[tuple[int, int, int, int], float] = {}
    for shape in [*shapes, *attention, *head]:
        if shape not in timed:
            timed[shape] = _best_time(torch, shape, repeats)
        b, m, k, nn = shape
        factor = 0.5 if shape in attention else 1.0  # causal: half the square is needed
        seconds += timed[shape] * factor
        flops += 2.0 * b * m * k * nn * factor
    return flops / seconds


def _best_time(torch: Any, shape: tuple[int, int, int, int], repeats: int) -> float:
    b, m, k, n = shape
    x, y = torch.randn(b, m, k), torch.randn(b, k, n)
    torch.bmm(x, y)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.bmm(x, y)
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------- set-up


def our_batch_order(examples: list[Any], batch: int, steps: int) -> list[list[int]]:
    """The batches ``LocalTrainer`` trains on (seed 0), in order, for ``steps`` steps."""
    from phi_finetune.local.examples import length_batches

    rng = random.Random(0)
    batches: list[list[int]] = []
    while len(batches) < steps:
        batches += length_batches(examples, batch, rng)
    return batches[:steps]


def trl_settings(name: str, spec: dict[str, Any], examples: list[Any]) -> dict[str, Any]:
    """SFTConfig for this job, as TRL's docs allow (see the README for why each is set).

    - ``bf16=False``: SFTConfig defaults to bf16 autocast, which on a CPU without bf16
      matmul units is emulated and slow; every trainer here runs fp32.
    - ``gradient_checkpointing``: SFTConfig defaults it to True; here it is the same for all
      trainers (off, or on with ``--memory``).
    - ``completion_only_loss=True`` on ``completion_mask``: assistant tokens only.
    - ``padding_free``: TRL refuses it with ``max_length`` set unless it packs; the inputs
      are already truncated to ``max_seq_length`` (the same examples for all), so
      ``max_length=None``.
    - ``packing``: rows of ``max_length`` tokens; the batch is cut to as many rows as give the
      same tokens per step as ``batch`` examples (TRL's docs: packing changes the effective
      batch), so all trainers see about the same tokens per step.
    """
    settings: dict[str, Any] = {
        "bf16": False,
        "fp16": False,
        "completion_only_loss": True,
        "max_length": spec["max_seq_length"],
        "dataset_num_proc": None,
    }
    if name == "trl_padding_free":
        settings.update(padding_free=True, max_length=None)
    if name == "trl_packing":
        mean = sum(len(ids) for ids, _ in examples) / len(examples)
        rows = max(1, round(spec["batch"] * mean / spec["max_seq_length"]))
        settings.update(packing=True, per_device_train_batch_size=rows)
    return settings


# ----------------------------------------------------------------------------- batches seen


def collated_stats(out: Any) -> dict[str, int]:
    """:func:`step_stats` of a collated batch (padded with ``attention_mask``, or padding-free
    / packed with ``position_ids``: a new sequence starts where the position is 0)."""
    labels = out["labels"]
    scored = int((labels[:, 1:] != -100).sum())
    if "attention_mask" in out:
        lengths = [int(x) for x in out["attention_mask"].sum(dim=1)]
    else:
        lengths = []
        for row in out["position_ids"]:
            starts = [i for i, p in enumerate(row.tolist()) if p == 0] + [len(row)]
            lengths += [b - a for a, b in itertools.pairwise(starts) if b > a]
    return step_stats(lengths, scored)


def add_step(steps: list[dict[str, int]], part: dict[str, int]) -> None:
    """Add a micro-batch's stats to the current step's (the last entry)."""
    last = steps[-1]
    for key, value in part.items():
        last[key] = last.get(key, 0) + value
