"""Benchmark: preparing ultrachat-shaped JSONL four ways, on the same file, in the same run.

(a) the reference: ``datasets.load_dataset("json", ...)`` + ``Dataset.to_json`` (fresh cache)
(b) pandas ``read_json(lines=True)`` + validation in pandas + ``to_json(lines=True)``
(c) a bare ``orjson.loads`` + ``orjson.dumps`` loop over the lines (the floor for Python)
(d) ``UltraChatDataset.from_files(...).prepare(...)`` (validate + sample + write + manifest)

Each approach runs in its own subprocess; peak RSS comes from ``os.wait4`` (that child only).
Synthetic rows follow ultrachat's shape: 4-14 turns, ~7.3 KB on average (train_sft has
207,865 rows, ~1.5 GB).

    python benchmarks/bench_data_prepare.py --rows 20000      # quick
    python benchmarks/bench_data_prepare.py                   # full size (207,865 rows)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FULL_ROWS = 207_865
MEAN_BYTES = 7300
_TEXT = (
    "the of and to in is you that it for on are with as this be at have or from by not what all "
    "were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long "
    "down day did get come made may part model data train cloud recipe travel garden python code "
    "energy history music story river mountain city market science health learning network"
)
WORDS = _TEXT.split()


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` synthetic ultrachat records (deterministic for ``seed``)."""
    import hashlib

    import orjson

    rng = random.Random(seed)
    corpus = " ".join(rng.choice(WORDS) for _ in range(900_000))
    corpus = corpus.replace(" the ", ". The ", 40_000)
    size = len(corpus)
    with path.open("wb") as handle:
        for _ in range(rows):
            turns = rng.choice((4, 4, 4, 6, 6, 8, 8, 10, 12, 14))
            # lognormal-ish total size around the mean, clipped to [600, 60000]
            total = int(min(60_000, max(600, rng.lognormvariate(8.62, 0.55))))
            weights = [
                rng.uniform(0.2, 0.6) if i % 2 == 0 else rng.uniform(0.8, 2.0) for i in range(turns)
            ]
            scale = total / sum(weights)
            messages = []
            for i, w in enumerate(weights):
                n = max(8, int(w * scale))
                start = rng.randrange(0, size - n)
                text = corpus[start : start + n].strip() or "hello"
                messages.append({"content": text, "role": "user" if i % 2 == 0 else "assistant"})
            prompt = messages[0]["content"]
            record = {
                "prompt": prompt,
                "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
                "messages": messages,
            }
            handle.write(orjson.dumps(record) + b"\n")


# ----------------------------------------------------------------------------- approaches
def run_a(src: Path, out: Path) -> int:
    import datasets

    datasets.disable_progress_bars()
    cache = Path(tempfile.mkdtemp(prefix="bench-hf-cache-"))
    try:
        ds = datasets.load_dataset(
            "json", data_files=str(src), split="train[:100%]", cache_dir=str(cache)
        )
        ds.to_json(str(out / "train_sft.jsonl"))
        return len(ds)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run_b(src: Path, out: Path) -> int:
    import pandas as pd

    df = pd.read_json(src, lines=True)

    def ok(messages: Any) -> bool:
        if not isinstance(messages, list) or not messages:
            return False
        prev = None
        for m in messages:
            if not isinstance(m, dict):
                return False
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant") or role == prev:
                return False
            if not isinstance(content, str) or not content.strip():
                return False
            prev = role
        return messages[-1].get("role") == "assistant"

    mask = df["messages"].map(ok)
    mask &= ~df["prompt_id"].duplicated()
    df = df[mask]
    df.to_json(out / "train_sft.jsonl", orient="records", lines=True, force_ascii=False)
    return len(df)


def run_c(src: Path, out: Path) -> int:
    import orjson

    n = 0
    with src.open("rb") as fin, (out / "train_sft.jsonl").open("wb") as fout:
        for line in fin:
            fout.write(orjson.dumps(orjson.loads(line)) + b"\n")
            n += 1
    return n


def run_d(src: Path, out: Path) -> int:
    os.environ["PHI_FINETUNE_NO_PROGRESS"] = "1"
    from phi_finetune.data import UltraChatDataset

    prepared = UltraChatDataset.from_files(src, split="train_sft").prepare(
        out, split_pc=100, sample="head", on_invalid="skip"
    )
    return prepared.counts["train"]


APPROACHES = {
    "a": ("datasets load + to_json (reference)", run_a),
    "b": ("pandas read_json + validate + to_json", run_b),
    "c": ("bare orjson loads/dumps loop", run_c),
    "d": ("phi_finetune prepare", run_d),
}


def child(approach: str, src: Path, out: Path) -> None:
    start = time.perf_counter()
    rows = APPROACHES[approach][1](src, out)
    wall = time.perf_counter() - start
    sys.stdout.write(json.dumps({"rows": rows, "wall": wall}) + "\n")


def measure(approach: str, src: Path, workdir: Path) -> dict[str, Any]:
    out = workdir / f"out-{approach}"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", approach, "--input", str(src), "--out", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        return {"approach": approach, "error": f"exit {proc.returncode}"}
    result = json.loads(output.strip().splitlines()[-1])
    # ru_maxrss is KiB on Linux.
    result.update(approach=approach, peak_rss_mb=usage.ru_maxrss / 1024)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=FULL_ROWS, help=f"rows to generate (default {FULL_ROWS})"
    )
    parser.add_argument("--approaches", default="abcd", help="subset to run, e.g. 'cd'")
    parser.add_argument("--workdir", help="where to put the data (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated input")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.input), Path(args.out))
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-data-"))
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "train_sft.jsonl"
    t0 = time.perf_counter()
    if not src.exists() or sum(1 for _ in src.open("rb")) != args.rows:
        generate(src, args.rows)
    size_mb = src.stat().st_size / 1e6
    print(
        f"input: {args.rows} rows, {size_mb:.1f} MB "
        f"({size_mb * 1e6 / args.rows / 1000:.2f} KB/row), "
        f"generated/checked in {time.perf_counter() - t0:.1f}s; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    results = []
    for key in args.approaches:
        res = measure(key, src, workdir)
        results.append(res)
        if "error" in res:
            print(f"({key}) {APPROACHES[key][0]}: FAILED {res['error']}")
            continue
        print(
            f"({key}) {APPROACHES[key][0]:<40} {res['wall']:8.2f} s  "
            f"{size_mb / res['wall']:8.1f} MB/s  "
            f"{res['rows'] / res['wall']:10.0f} rows/s  peak RSS {res['peak_rss_mb']:8.1f} MB",
            flush=True,
        )
    ok = {r["approach"]: r for r in results if "error" not in r}
    if "d" in ok:
        d = ok["d"]["wall"]
        slow = [ok[k]["wall"] for k in "ab" if k in ok]
        if slow:
            print(
                f"ratio: (d) is {min(slow) / d:.2f}x faster than the faster of (a)/(b) (goal >= 3x)"
            )
        if "c" in ok:
            print(f"ratio: (d) reaches {ok['c']['wall'] / d:.0%} of (c)'s throughput (goal >= 50%)")
        print(f"(d) peak RSS {ok['d']['peak_rss_mb']:.0f} MB (goal < 300 MB)")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
