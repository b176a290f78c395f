"""``phi-finetune demo`` end to end, by part, against an older tree, and each part's floor.

Run from the repository root:

    git archive a130a33 | tar -x -C /tmp/old-demo     # the tree before the fast start
    python benchmarks/bench_demo.py --old-tree /tmp/old-demo [--rounds 3] [--max-steps N]

Each round runs the demo of the old tree and of this tree, each in a fresh process (imports
count, as for a user), in alternating order; the table gives each part's median seconds and
the median of the per-round ratios new/old, and the CPU seconds the demo and its server used
(less sensitive to other work on a shared machine than the wall time). Parts: start-up and
imports (wall time the steps do not account for), prepare data, plan, fine-tune, register,
endpoint start (the deploy step), score, teardown. Without ``--old-tree`` only this tree runs.

The floors are measured alone, in fresh processes: ``python -c pass`` plus the CLI import
(start-up); ``import torch, transformers, peft`` (the fine-tune step's fixed part before any
training); a copy of the merged model folder (register); ``import torch, transformers,
fastapi, uvicorn`` + loading the merged model from its folder (a server started cold, printed
below the table; the demo's server process imports while the model trains, so the endpoint
start's floor is a second load of the model in that process, with everything imported); one
in-process generate of the sample request (score); stopping an idle Python process (teardown).

The new tree's SQLite MLflow store starts from a cached empty schema; the cache is built before
the rounds (in a folder of this run) unless ``--cold-cache`` gives every round a new, empty one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = {
    "start-up, imports, output": None,
    "prepare data": "prepare data",
    "plan": "plan",
    "fine-tune": "fine-tune (LoRA)",
    "register": "register (MLflow)",
    "endpoint start": "deploy (local HTTP endpoint)",
    "score": "score a held-out prompt",
    "teardown": "teardown",
}


def _env(tree: Path, cache: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PHI_FINETUNE_NO_PROGRESS": "1"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true")
    if cache is not None:
        env["PHI_FINETUNE_CACHE_DIR"] = str(cache)
    return env


def run_demo(tree: Path, cache: Path | None, max_steps: int | None) -> dict[str, float]:
    """One demo in a fresh process: seconds per part (and ``total``)."""
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as workdir:
        command = [sys.executable, "-m", "phi_finetune.cli.main", "demo", "--workdir", workdir]
        if max_steps is not None:
            command += ["--max-steps", str(max_steps)]
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
            env=_env(tree, cache),
            cwd=workdir,
        )
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
            raise SystemExit(f"the demo of {tree} failed with code {done.returncode}")
        total = time.perf_counter() - started
    timings: dict[str, float] = json.loads(done.stdout)["timings"]
    parts = {name: float(timings.get(key, 0.0)) for name, key in PARTS.items() if key}
    parts["start-up, imports, output"] = total - sum(timings.values())
    parts["total"] = total
    parts["total CPU (user+sys)"] = _children_cpu() - cpu_before
    return parts


def _children_cpu() -> float:
    """CPU seconds of the reaped child processes (the demo and the server it started)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_FLOOR_LOAD = """
import sys, time, json
started = time.perf_counter()
import torch, transformers, fastapi, uvicorn
from phi_finetune.local.model_loading import load_model_and_tokenizer
model, tokenizer = load_model_and_tokenizer(sys.argv[1])
model.eval()
loaded = time.perf_counter()
# Again, with every module imported: what is left once the imports ran ahead.
model, tokenizer = load_model_and_tokenizer(sys.argv[1])
model.eval()
reloaded = time.perf_counter()
from phi_finetune.local._chat import generate
messages = [{"role": "user", "content": "What is a good name for a cat?"}]
generate(model, tokenizer, [messages], {"max_new_tokens": 8, "do_sample": False})
print(json.dumps({"cold": loaded - started, "load": reloaded - loaded,
                  "generate": time.perf_counter() - reloaded}))
"""


def _wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    return time.perf_counter() - started


def floors(max_steps: int | None) -> dict[str, float]:
    """Each part's floor, measured alone (see the module docstring)."""
    import shutil

    env = _env(ROOT, None)
    python = sys.executable
    out: dict[str, float] = {}
    out["start-up, imports, output"] = _wall([python, "-c", "import phi_finetune.cli.main"], env)
    out["fine-tune"] = _wall([python, "-c", "import torch, transformers, peft"], env)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as folder:
        model_dir = Path(folder) / "tiny"
        build = (
            "import sys; from phi_finetune.local.tiny_model import build_tiny_model; "
            "build_tiny_model(sys.argv[1], texts=['the cat sat on the mat'] * 8, seed=0)"
        )
        subprocess.run([python, "-c", build, str(model_dir)], check=True, env=env, timeout=600)
        started = time.perf_counter()
        shutil.copytree(model_dir, Path(folder) / "copy")
        out["register"] = time.perf_counter() - started
        done = subprocess.run(
            [python, "-c", _FLOOR_LOAD, str(model_dir)],
            check=True,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        # The demo's server imports while the model trains: only the model load is left.
        out["endpoint start"] = measured["load"]
        out["endpoint start, cold"] = measured["cold"]
        out["score"] = measured["generate"]
    idle = subprocess.Popen([python, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)
    started = time.perf_counter()
    idle.terminate()
    idle.wait(timeout=10)
    out["teardown"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-tree", type=Path, default=None, help="the tree to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--cold-cache", action="store_true", help="a new schema cache per round")
    args = parser.parse_args()
    trees = {"new": ROOT}
    if args.old_tree is not None:
        trees["old"] = args.old_tree.resolve()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="bench-demo-cache-") as cache_root:
        warm = Path(cache_root) / "warm"
        if not args.cold_cache:
            seed = (
                "import sys; from phi_finetune.local._mlflow_store import seed_sqlite_store; "
                "seed_sqlite_store('sqlite:///' + sys.argv[1])"
            )
            db = str(Path(cache_root) / "warm.db")
            subprocess.run([sys.executable, "-c", seed, db], check=True, env=_env(ROOT, warm))
        for round_index in range(args.rounds):
            order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
            for name in order:
                cache = Path(cache_root) / f"cold-{round_index}" if args.cold_cache else warm
                parts = run_demo(trees[name], cache, args.max_steps)
                results[name].append(parts)
                print(f"round {round_index + 1} {name}: {parts['total']:.1f} s", flush=True)
    floor = floors(args.max_steps)
    names = [*PARTS, "total", "total CPU (user+sys)"]
    header = f"{'part':28} {'new s':>8}"
    if "old" in trees:
        header += f" {'old s':>8} {'new/old':>8}"
    print(header + f" {'floor s':>8}")
    for part in names:
        new = statistics.median(r[part] for r in results["new"])
        line = f"{part:28} {new:8.2f}"
        if "old" in trees:
            old = statistics.median(r[part] for r in results["old"])
            ratios = [
                n[part] / o[part]
                for n, o in zip(results["new"], results["old"], strict=True)
                if o[part] > 0
            ]
            line += f" {old:8.2f} {statistics.median(ratios) if ratios else float('nan'):8.2f}"
        floor_value = floor.get(part)
        line += f" {floor_value:8.2f}" if floor_value is not None else f" {'':>8}"
        print(line)
    print(f"endpoint start floor of a server started cold: {floor['endpoint start, cold']:.2f} s")
    print(
        f"{args.rounds} interleaved rounds, medians; ratio = median of per-round new/old; "
        f"cache: {'cold' if args.cold_cache else 'warm'}; max_steps: {args.max_steps}"
    )


if __name__ == "__main__":
    main()
