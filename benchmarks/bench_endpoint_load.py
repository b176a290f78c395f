"""Benchmark: the hardened local endpoint under load and under hostile input.

1. Load: ``--requests`` (default 1,000) greedy requests (``max_new_tokens`` 4, the untrained tiny
   model) at each concurrency in ``--concurrency`` (default 8 and 32), each client on its own
   keep-alive connection, while ``--idle`` (default 150) connections without a key sit open.
   Figures: errors (goal: zero), throughput, p50/p99 latency, server RSS before and after.
2. Hostile input: every case of issue 15's "Local endpoint" list sent once; "held" means the
   server answered the expected 4xx (never 500, never 200) and still serves a real request.

    python benchmarks/bench_endpoint_load.py
    python benchmarks/bench_endpoint_load.py --requests 200 --concurrency 32 --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
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

USER = [{"role": "user", "content": "What is the capital of France?"}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def body(parameters: dict[str, Any], conversations: Any = None) -> bytes:
    inner = {"input_string": conversations or [USER], "parameters": parameters}
    return json.dumps({"input_data": inner, "params": {}}).encode("utf-8")


def load(port: int, key: str, requests: int, clients: int) -> dict[str, Any]:
    payload = body({"max_new_tokens": 4, "do_sample": False})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    counter = {"left": requests}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if counter["left"] <= 0:
                    break
                counter["left"] -= 1
            start = time.perf_counter()
            try:
                connection.request("POST", "/score", body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}: {data[:120]!r}")
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "concurrency": clients,
        "requests": requests,
        "errors": len(errors),
        "first_errors": errors[:3],
        "throughput_rps": round(requests / wall, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "wall_s": round(wall, 1),
    }


def hostile_cases() -> list[tuple[str, bytes, int]]:
    """(name, body, expected status) for each hostile input the issue lists, and more."""
    deep = b"[" * 100_000 + b"]" * 100_000
    surrogate = b'{"input_data": {"input_string": [[{"role": "user", "content": "\\ud800"}]]}}'
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "the cat sat"}
        for i in range(1501)
    ]
    cases: list[tuple[str, bytes, int]] = [
        ("deeply nested JSON", deep, 400),
        ("unclosed nesting", b"[" * 100_000, 400),
        ("lone surrogate", surrogate, 400),
        ("invalid UTF-8", surrogate.replace(b"\\ud800", b"\xff"), 400),
        ("1,501 messages beyond 1,024 positions", body({"max_new_tokens": 4}, [messages]), 422),
        (
            "100k-character prompt",
            body({"max_new_tokens": 4}, [[{"role": "user", "content": "a" * 100_000}]]),
            422,
        ),
    ]
    for name, value in [
        ("top_k", -1),
        ("repetition_penalty", 0),
        ("repetition_penalty", -1),
        ("num_beams", 0),
        ("num_beams", -3),
        ("num_beams", 50_000),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("temperature", -1),
        ("top_p", 0),
        ("top_p", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 10**6),
        ("do_sample", "yes"),
    ]:
        cases.append((f"{name}={value}", body({"do_sample": True, name: value}), 422))
    return cases


def hostile(port: int, key: str) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    results: list[dict[str, Any]] = []
    for name, payload, expected in hostile_cases():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start = time.perf_counter()
        connection.request("POST", "/score", body=payload, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        results.append(
            {
                "case": name,
                "status": response.status,
                "held": response.status == expected,
                "ms": round((time.perf_counter() - start) * 1000, 1),
            }
        )
    return {
        "tried": len(results),
        "held": sum(r["held"] for r in results),
        "slowest_ms": max(r["ms"] for r in results),
        "cases": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--idle", type=int, default=150, help="idle keyless connections held")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    from phi_finetune.local.server import LocalServer
    from phi_finetune.local.tiny_model import build_tiny_model

    model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-load-")) / "model")
    figures: dict[str, Any] = {"runs": []}
    with LocalServer(
        model_dir, threads=args.threads, env={"OMP_NUM_THREADS": str(args.threads)}
    ) as server:
        assert server.port is not None and server.pid is not None
        figures["rss_mb_start"] = round(rss_mb(server.pid), 1)
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.idle)]
        try:
            for clients in args.concurrency:
                run = load(server.port, server.key, args.requests, clients)
                run["idle_keyless_connections"] = args.idle
                run["rss_mb_after"] = round(rss_mb(server.pid), 1)
                figures["runs"].append(run)
        finally:
            for sock in idle:
                sock.close()
        figures["hostile"] = hostile(server.port, server.key)
        figures["hostile"]["served_after"] = server.score(USER, {"max_new_tokens": 2}).text != ""
        figures["rss_mb_end"] = round(rss_mb(server.pid), 1)

    for run in figures["runs"]:
        print(
            f"concurrency {run['concurrency']:3d}: {run['requests']} requests, "
            f"{run['errors']} errors, {run['throughput_rps']} req/s, p50 {run['p50_ms']} ms, "
            f"p99 {run['p99_ms']} ms, RSS {run['rss_mb_after']} MB "
            f"({run['idle_keyless_connections']} idle keyless connections open)"
        )
    h = figures["hostile"]
    print(f"hostile inputs: {h['held']}/{h['tried']} held, slowest {h['slowest_ms']} ms")
    for case in h["cases"]:
        if not case["held"]:
            print(f"  NOT HELD: {case['case']} -> {case['status']}")
    print(f"server RSS: {figures['rss_mb_start']} MB at start, {figures['rss_mb_end']} MB at end")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    ok = all(run["errors"] == 0 for run in figures["runs"]) and h["held"] == h["tried"]
    print("goal (0 errors, every hostile input held):", "MET" if ok else "NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
