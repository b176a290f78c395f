"""Benchmark: dynamic batching in the local endpoint (issue 16, item 2).

Throughput (requests/s) of greedy ``POST /score`` requests at concurrency 1, 8 and 32 (closed
loop: each client sends its next request when its answer arrives), for

- ``server``: this checkout's server (batching on, the default window and batch size);
- ``old``: the server before batching, started from another source tree (``--old-tree``, e.g.
  ``git archive 74227fe | tar -x -C /tmp/old``), else this server with ``max_batch_size=1``;
- ``seq``: in-process :func:`phi_finetune.local._chat.generate`, one conversation at a time;
- ``batch``: in-process, all ``concurrency`` conversations in one padded ``generate`` call
  (:func:`phi_finetune.local.batching.run_batch`): the ceiling.

Rounds are interleaved (every mode once per round, ``--rounds`` >= 3) and the ratios are the
median of the per-round ratios, so load from other processes hits all modes alike. p99 latency
is over every request of the server modes. Goal at concurrency 8: ``server/old`` >= 4 and
``server/batch`` >= 0.7.

    python benchmarks/bench_local_batching.py --old-tree /tmp/old --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "What is the capital of France?"
KEY = "bench-key-0123456789"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def conversation(index: int) -> list[dict[str, str]]:
    # Different prompts (and lengths) per client, so batches really pad.
    return [{"role": "user", "content": f"{PROMPT} {'please ' * (index % 5)}"}]


class Server:
    """A server process on 127.0.0.1 (``tree``: the source tree it runs from)."""

    def __init__(self, model_dir: Path, tree: Path, extra: list[str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-batching-"))
        ready = self.folder / "ready.json"
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "PHI_FINETUNE_SERVER_KEY": KEY,
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, "-m", "phi_finetune.local.server", "--model", str(model_dir)]
        command += ["--ready-file", str(ready), "--threads", "1", *extra]
        self.log = (self.folder / "server.log").open("wb")
        # cwd is the tree: Python puts the cwd first on sys.path for -m.
        self.process = subprocess.Popen(
            command, cwd=tree, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while not ready.is_file():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {self.folder / 'server.log'}")
            time.sleep(0.05)
        time.sleep(0.1)
        self.port = int(json.loads(ready.read_text())["port"])
        for _ in range(200):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server never healthy")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def http_round(
    port: int, concurrency: int, requests: int, max_new_tokens: int
) -> tuple[float, list[float]]:
    """``(requests/s, latencies)`` for ``requests`` spread over ``concurrency`` clients."""
    per_client = max(1, requests // concurrency)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def client(index: int) -> None:
        body = json.dumps(
            {
                "input_data": {
                    "input_string": [conversation(index)],
                    "parameters": {"max_new_tokens": max_new_tokens, "do_sample": False},
                }
            }
        ).encode()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.connect()
        barrier.wait()
        mine = []
        for _ in range(per_client):
            started = time.perf_counter()
            connection.request("POST", "/score", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                errors.append(f"{response.status}: {data[:100]!r}")
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} errors, first: {errors[0]}")
    return per_client * concurrency / elapsed, latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="per round and mode")
    parser.add_argument("--old-tree", type=Path, default=None, help="source tree of the old server")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (the ratios are medians over rounds)")

    import torch

    from phi_finetune.local._chat import encode_prompts, generate
    from phi_finetune.local.batching import GenerationJob, run_batch
    from phi_finetune.local.registry import load_chat_model
    from phi_finetune.local.tiny_model import build_tiny_model

    torch.set_num_threads(1)
    model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-batching-")) / "model")
    model, tokenizer = load_chat_model(str(model_dir))
    here = Path(__file__).resolve().parents[1]
    old_tree = args.old_tree.resolve() if args.old_tree else here
    old_extra = [] if args.old_tree else ["--max-batch-size", "1"]
    new_server = Server(model_dir, here, [])
    old_server = Server(model_dir, old_tree, old_extra)
    greedy = {"max_new_tokens": args.max_new_tokens, "do_sample": False}

    def in_process(concurrency: int, batched: bool) -> float:
        conversations = [conversation(i) for i in range(concurrency)]
        prompts = encode_prompts(tokenizer, conversations)
        total = max(concurrency, args.requests // 2)
        done = 0
        started = time.perf_counter()
        while done < total:
            if batched:
                jobs = [
                    GenerationJob(prompt_ids=p, max_new_tokens=args.max_new_tokens) for p in prompts
                ]
                run_batch(model, tokenizer, jobs)
            else:
                for item in conversations:
                    generate(model, tokenizer, [item], greedy)
            done += concurrency
        return done / (time.perf_counter() - started)

    modes: dict[str, Callable[[int], tuple[float, list[float]]]] = {
        "server": lambda c: http_round(
            new_server.port, c, max(args.requests, c), args.max_new_tokens
        ),
        "old": lambda c: http_round(old_server.port, c, max(args.requests, c), args.max_new_tokens),
        "seq": lambda c: (in_process(c, False), []),
        "batch": lambda c: (in_process(c, True), []),
    }
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    try:
        for name in ("server", "old"):  # warm up both servers
            modes[name](2)
        for _ in range(args.rounds):
            for concurrency in args.concurrency:
                for name, run in modes.items():
                    rate, lat = run(concurrency)
                    rates.setdefault((name, concurrency), []).append(rate)
                    latencies.setdefault((name, concurrency), []).extend(lat)
        connection = http.client.HTTPConnection("127.0.0.1", new_server.port, timeout=10)
        connection.request("GET", "/health")
        health = json.loads(connection.getresponse().read())
    finally:
        new_server.stop()
        old_server.stop()

    def median_ratio(a: str, b: str, c: int) -> float:
        pairs = zip(rates[(a, c)], rates[(b, c)], strict=True)
        return statistics.median(x / y for x, y in pairs)

    old = f"tree {old_tree}" if args.old_tree else "this server, max_batch_size=1"
    print(
        f"tiny model, 1 torch thread, max_new_tokens {args.max_new_tokens}, {args.rounds} rounds, "
        f"old server: {old}"
    )
    print(
        "| concurrency | server req/s | old req/s | seq req/s | batch req/s | server/old "
        "| server/batch | p99 server ms | p99 old ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results: dict[str, Any] = {}
    for c in args.concurrency:
        row = {name: statistics.median(rates[(name, c)]) for name in modes}
        p99 = {name: 1000 * percentile(latencies[(name, c)], 0.99) for name in ("server", "old")}
        vs_old, vs_batch = median_ratio("server", "old", c), median_ratio("server", "batch", c)
        print(
            f"| {c} | {row['server']:.0f} | {row['old']:.0f} | {row['seq']:.0f} | "
            f"{row['batch']:.0f} | {vs_old:.2f}x | {vs_batch:.2f} | {p99['server']:.0f} | "
            f"{p99['old']:.0f} |"
        )
        results[str(c)] = {**row, "server/old": vs_old, "server/batch": vs_batch, "p99": p99}
    served = sum(len(v) for (name, _), v in latencies.items() if name == "server") + 2
    batches = int(health.get("batches", 0)) or 1
    print(
        f"server batches: {batches} for {served} requests (mean {served / batches:.1f}, "
        f"largest {health.get('largest_batch')})"
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
