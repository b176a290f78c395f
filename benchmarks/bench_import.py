"""Whole-process start-up cost: `import phi_finetune`, `phi-finetune --help`, `import azure.ai.ml`.

Run: ``python benchmarks/bench_import.py [--repeat N]``. Prints the median wall time of each and
its ratio to ``import azure.ai.ml`` measured in the same run. Goal: each ratio <= 0.10.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "import phi_finetune": [sys.executable, "-c", "import phi_finetune"],
    "phi-finetune --help": [sys.executable, "-m", "phi_finetune.cli.main", "--help"],
    "import azure.ai.ml (baseline)": [sys.executable, "-c", "import azure.ai.ml"],
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
}


def measure(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("phi-finetune"):
        CASES["phi-finetune --help"] = ["phi-finetune", "--help"]
    results = {name: measure(cmd, args.repeat) for name, cmd in CASES.items()}
    baseline = results["import azure.ai.ml (baseline)"]
    print(f"{'case':34} {'median s':>9} {'ratio to azure.ai.ml':>22}")
    for name, value in results.items():
        print(f"{name:34} {value:9.3f} {value / baseline:22.3f}")
    ok = all(results[n] / baseline <= 0.10 for n in ("import phi_finetune", "phi-finetune --help"))
    print("goal (<= 0.10 of import azure.ai.ml):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
