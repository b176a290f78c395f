"""Fault matrix figures: every route the Azure flow uses x reset/timeout/429/503 x once/always.

Runs ``FineTuneSession.run`` (plan -> teardown) on FakeAzureML once per cell, with the fault on
one route (see ``tests/_fault_harness.py``; "once" = ``times=1``, "always" = ``times=None``) and
prints how many cells held, by kind and mode, and every cell that did not.

- once held: the run succeeded with one job, one model version, three data assets, nothing
  left billing;
- always held: only a ``phi_finetune`` error came out (or the run succeeded without the
  route), and the journal still loads.

    python benchmarks/fault_matrix.py                 # the whole matrix (~10-20 min)
    python benchmarks/fault_matrix.py --modes once --kinds reset,429
    python benchmarks/fault_matrix.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="once,always")
    parser.add_argument("--kinds", default="reset,timeout,429,503")
    parser.add_argument("--route", default=None, help="only routes whose label contains this")
    parser.add_argument("--json", default=None, help="also write every cell to this file")
    args = parser.parse_args()
    os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
    logging.disable(logging.WARNING)

    from _fault_harness import discover_routes, trial

    data_dir = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    routes = discover_routes(data_dir)
    if args.route:
        routes = [r for r in routes if args.route in r.label]
    kinds = args.kinds.split(",")
    modes = args.modes.split(",")
    print(f"{len(routes)} routes x {len(kinds)} kinds x {len(modes)} modes", flush=True)
    started = time.perf_counter()
    cells = []
    for route in routes:
        for kind in kinds:
            for mode in modes:
                outcome = trial(route, kind, mode, data_dir)
                cells.append(outcome)
                if not outcome.held:
                    print(f"NOT HELD {mode:6} {kind:7} {route.label}: {outcome.detail[:200]}")
    tried: Counter[tuple[str, str]] = Counter()
    held: Counter[tuple[str, str]] = Counter()
    for c in cells:
        tried[(c.mode, c.kind)] += 1
        held[(c.mode, c.kind)] += c.held
    print(f"\n{'mode':8}{'kind':9}held/tried")
    for mode in modes:
        for kind in kinds:
            print(f"{mode:8}{kind:9}{held[(mode, kind)]}/{tried[(mode, kind)]}")
    total_held = sum(c.held for c in cells)
    optional = sum(1 for c in cells if c.detail == "succeeded without the route")
    print(
        f"total    {total_held}/{len(cells)} held ({optional} 'always' cells succeeded without "
        f"the route); {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        rows = [
            {
                "route": c.route.label,
                "kind": c.kind,
                "mode": c.mode,
                "held": c.held,
                "hits": c.hits,
                "detail": c.detail,
            }
            for c in cells
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if total_held == len(cells) else 1


if __name__ == "__main__":
    sys.exit(main())
