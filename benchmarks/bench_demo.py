"""Whole ``phi-finetune demo`` wall time, and where the time goes.

Run: ``python benchmarks/bench_demo.py [--max-steps N]``. Runs the demo in a fresh process (so
imports count, as for a user) and prints the total wall time, the per-step times the demo
reports, and the share of the total that is process start-up and imports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "phi_finetune.cli.main", "demo", "--workdir", workdir]
        if args.max_steps is not None:
            command += ["--max-steps", str(args.max_steps)]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "--json"], capture_output=True, text=True, check=True, timeout=900
        )
        total = time.perf_counter() - started
    timings: dict[str, float] = json.loads(done.stdout)["timings"]
    steps = sum(timings.values())
    print(f"{'part':34} {'seconds':>8} {'share':>7}")
    for name, seconds in timings.items():
        print(f"{name:34} {seconds:8.2f} {seconds / total:7.1%}")
    other = total - steps
    print(f"{'start-up, imports, output':34} {other:8.2f} {other / total:7.1%}")
    print(f"{'total wall time':34} {total:8.2f} {1:7.1%}")


if __name__ == "__main__":
    main()
