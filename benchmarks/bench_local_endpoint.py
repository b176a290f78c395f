"""Benchmark: the local endpoint's HTTP overhead, concurrency and memory.

1. p50/p99 latency of a short greedy generation (``max_new_tokens`` 8) called in-process
   (:func:`phi_finetune.local.registry.generate`) and through ``POST /score`` on a keep-alive
   connection. Goal: HTTP overhead <= 5 ms at p50.
2. 8 concurrent clients, 1000 requests in all: errors (goal: zero), throughput, and the server
   process's RSS before, halfway and after (goal: flat).

    python benchmarks/bench_local_endpoint.py                 # quick: 200 latency samples
    python benchmarks/bench_local_endpoint.py --samples 500 --requests 1000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONVERSATION = [{"role": "user", "content": "What is the capital of France?"}]
PARAMETERS = {"max_new_tokens": 8, "do_sample": False}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, each process")
    args = parser.parse_args()

    import torch

    from phi_finetune.local.registry import generate, load_chat_model
    from phi_finetune.local.server import LocalServer
    from phi_finetune.local.tiny_model import build_tiny_model
    from phi_finetune.scoring import build_request, parse_response

    torch.set_num_threads(args.threads)
    model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-endpoint-")) / "model")
    model, tokenizer = load_chat_model(str(model_dir))
    body = json.dumps(build_request([CONVERSATION], PARAMETERS)).encode("utf-8")

    t0 = time.perf_counter()
    with LocalServer(
        model_dir, threads=args.threads, env={"OMP_NUM_THREADS": str(args.threads)}
    ) as server:
        ready_s = time.perf_counter() - t0
        assert server.port is not None and server.pid is not None
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server.key}"}

        def call(connection: http.client.HTTPConnection) -> str:
            connection.request("POST", "/score", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}: {data[:200]!r}")
            return parse_response(data).text

        # Warm-up both paths.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for _ in range(10):
            expected = generate(model, tokenizer, [CONVERSATION], PARAMETERS)[0]
            assert call(connection) == expected

        # Interleave the two paths so machine noise hits both alike.
        local_ms: list[float] = []
        http_ms: list[float] = []
        for _ in range(args.samples):
            t = time.perf_counter()
            generate(model, tokenizer, [CONVERSATION], PARAMETERS)
            local_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            call(connection)
            http_ms.append((time.perf_counter() - t) * 1000)
        connection.close()

        # Concurrency.
        rss_before = rss_mb(server.pid)
        errors: list[str] = []
        done = {"n": 0}
        rss_mid: list[float] = []
        lock = threading.Lock()
        per_client = args.requests // args.clients
        latencies: list[float] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            for _ in range(per_client):
                t = time.perf_counter()
                try:
                    call(conn)
                except Exception as exc:
                    with lock:
                        errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                elapsed = (time.perf_counter() - t) * 1000
                with lock:
                    latencies.append(elapsed)
                    done["n"] += 1
                    if done["n"] == args.requests // 2:
                        rss_mid.append(rss_mb(server.pid))  # type: ignore[arg-type]
            conn.close()

        t = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t
        rss_after = rss_mb(server.pid)
        total = per_client * args.clients

    figures: dict[str, Any] = {
        "server_ready_s": round(ready_s, 2),
        "in_process_p50_ms": round(statistics.median(local_ms), 2),
        "in_process_p99_ms": round(percentile(local_ms, 0.99), 2),
        "http_p50_ms": round(statistics.median(http_ms), 2),
        "http_p99_ms": round(percentile(http_ms, 0.99), 2),
        "http_overhead_p50_ms": round(statistics.median(http_ms) - statistics.median(local_ms), 2),
        "concurrent_clients": args.clients,
        "concurrent_requests": total,
        "concurrent_errors": len(errors),
        "concurrent_throughput_rps": round(total / wall, 1),
        "concurrent_p50_ms": round(statistics.median(latencies), 2),
        "concurrent_p99_ms": round(percentile(latencies, 0.99), 2),
        "server_rss_mb_before": round(rss_before, 1),
        "server_rss_mb_mid": round(rss_mid[0], 1) if rss_mid else None,
        "server_rss_mb_after": round(rss_after, 1),
    }
    for key, value in figures.items():
        print(f"{key:30s} {value}")
    if errors:
        print("first errors:", errors[:3])
    ok = figures["http_overhead_p50_ms"] <= 5 and not errors
    print("goal (overhead <= 5 ms p50, zero errors):", "MET" if ok else "NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
