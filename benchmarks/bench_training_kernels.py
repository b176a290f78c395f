"""Benchmark: what each kernel choice is worth inside one LocalTrainer step (issue 17).

Trains the benchmark's tiny model for ``--steps`` steps with :class:`LocalTrainer`, keeps its
batches, then replays them (learning rate 0 by then: the weights stay put) with one switch
off and on in alternation, ``--rounds`` times, in the same process; prints the median of the
per-round speed ratios (on / off) with min-max. The switches:

- ``fused_lora``: :func:`phi_finetune.local.fused_lora.fused_lora` vs peft's forward (every
  other switch runs on top of the fused projections, as the trainer does);
- ``eager`` / ``sdpa_math``: transformers' eager attention, SDPA's math backend (vs SDPA's
  default, the flash kernel for CPU);
- ``rms_norm``: ``torch.nn.functional.rms_norm`` instead of ``Phi3RMSNorm.forward``;
- ``no_cache``: ``use_cache=False`` in the decoder call;
- ``foreach_adamw`` / ``loop_adamw``: AdamW without ``fused=True``;
- ``compile`` (with ``--compile``): ``torch.compile(dynamic=True)`` of each decoder layer; its
  compile time is printed, not timed into the ratio.

A ratio above 1 means the switch makes the step faster. Also prints a profile of one replay by
operator, as the trainer runs it (``--profile``).

    python benchmarks/bench_training_kernels.py --rounds 12
    python benchmarks/bench_training_kernels.py --rounds 3 --switches compile --compile
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SWITCHES = (
    "fused_lora",
    "eager",
    "sdpa_math",
    "rms_norm",
    "no_cache",
    "foreach_adamw",
    "loop_adamw",
)

Switch = Callable[[], contextlib.AbstractContextManager[Any]]


def trained_run(work: Path, steps: int) -> tuple[Any, Any, list[Any]]:
    """``(trainer, run, groups)`` after ``steps`` steps (the groups are the steps' batches)."""
    import bench_local_training as bench

    from phi_finetune.local import training

    captured: dict[str, Any] = {"groups": []}
    real = training.LocalTrainer._optimizer_step

    def spy(self: Any, run: Any, group: Any, epoch: float) -> Any:
        captured["run"] = run
        captured["groups"].append(group)
        return real(self, run, group, epoch)

    training.LocalTrainer._optimizer_step = spy  # type: ignore[method-assign]
    try:
        trainer = training.LocalTrainer(
            work / "model",
            output_dir=work / "out-kernels",
            parameters=bench.our_parameters({"steps": steps, "batch": 8, "max_seq_length": 512}),
            device="cpu",
        )
        trainer.train(work / "train.jsonl")
    finally:
        training.LocalTrainer._optimizer_step = real  # type: ignore[method-assign]
    return trainer, captured["run"], captured["groups"]


def switches(run: Any, compile_layers: bool) -> dict[str, Switch]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.models.phi3 import modeling_phi3

    from phi_finetune.local.fused_lora import fused_lora

    model = run.model
    base = model.get_base_model()

    @contextlib.contextmanager
    def attention(name: str) -> Iterator[None]:
        base.set_attn_implementation(name)
        try:
            yield
        finally:
            base.set_attn_implementation("sdpa")

    @contextlib.contextmanager
    def instance_forwards(pairs: list[tuple[Any, Any]]) -> Iterator[None]:
        for module, forward in pairs:
            module.forward = forward
        try:
            yield
        finally:
            for module, _ in pairs:
                module.__dict__.pop("forward", None)

    def rms_norm() -> contextlib.AbstractContextManager[Any]:
        def forward(norm: Any) -> Any:
            return lambda h: torch.nn.functional.rms_norm(
                h, norm.weight.shape, norm.weight, norm.variance_epsilon
            )

        norms = [m for m in model.modules() if isinstance(m, modeling_phi3.Phi3RMSNorm)]
        return instance_forwards([(m, forward(m)) for m in norms])

    def no_cache() -> contextlib.AbstractContextManager[Any]:
        decoder = base.model
        plain = type(decoder).forward
        return instance_forwards(
            [(decoder, lambda *a, **k: plain(decoder, *a, **{**k, "use_cache": False}))]
        )

    @contextlib.contextmanager
    def optimizer(**kind: bool) -> Iterator[None]:
        fused = run.optimizer
        params = [p for group in fused.param_groups for p in group["params"]]
        run.optimizer = torch.optim.AdamW(params, lr=0.0, **kind)
        try:
            yield
        finally:
            run.optimizer = fused

    table: dict[str, Switch] = {
        "fused_lora": lambda: fused_lora(model),
        "eager": lambda: attention("eager"),
        "sdpa_math": lambda: sdpa_kernel(SDPBackend.MATH),
        "rms_norm": rms_norm,
        "no_cache": no_cache,
        "foreach_adamw": lambda: optimizer(foreach=True),
        "loop_adamw": lambda: optimizer(foreach=False),
    }
    if compile_layers:
        compiled = [
            (layer, torch.compile(layer.forward, dynamic=True)) for layer in base.model.layers
        ]
        table["compile"] = lambda: instance_forwards(compiled)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--switches", default=",".join(SWITCHES))
    parser.add_argument("--compile", action="store_true", help="also offer the compile switch")
    parser.add_argument("--profile", action="store_true", help="operator profile of one replay")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import bench_local_training as bench
    import torch

    from phi_finetune.local.fused_lora import fused_lora

    torch.set_num_threads(args.threads)
    work = bench.prepare(argparse.Namespace(examples=400, hidden=128, layers=2, model_vocab=None))
    trainer, run, groups = trained_run(work, args.steps)
    step = type(trainer)._optimizer_step
    tokens = sum(len(run.examples[i][0]) for group in groups for b in group for i in b)

    def replay() -> float:
        started = time.perf_counter()
        for group in groups:
            step(trainer, run, group, 0.0)
        return time.perf_counter() - started

    table = switches(run, args.compile)
    replay()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with fused_lora(run.model), profile(activities=[ProfilerActivity.CPU]) as prof:
            replay()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"{len(groups)} steps, {tokens} tokens per replay, {torch.get_num_threads()} threads")
    for name in args.switches.split(","):
        if name == "compile":
            started = time.perf_counter()
            with table[name]():
                replay()
            print(f"compile: first replay (compiling) {time.perf_counter() - started:.1f} s")
        ratios, base_times = [], []
        shipped = contextlib.nullcontext() if name == "fused_lora" else fused_lora(run.model)
        with shipped:
            for _ in range(args.rounds):
                off = replay()
                with table[name]():
                    on = replay()
                ratios.append(off / on)
                base_times.append(off)
        print(
            f"{name}: speed on/off median {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f}), {args.rounds} rounds; off: "
            f"{tokens / statistics.median(base_times):,.0f} tokens/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
