"""Dynamic batching in the local endpoint (issue 16, item 2): requests generated together get
exactly the answer they get alone under greedy decoding, streaming ones included."""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from phi_finetune.local._chat import encode_prompts, generate
from phi_finetune.local.batching import Batcher, GenerationJob, JobResult, run_batch
from phi_finetune.local.server import LocalServer
from phi_finetune.local.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

# Prompts of different lengths, each with its own max_new_tokens.
CASES = [
    ("hi", 3),
    ("the cat sat on the mat", 40),
    ("a dog " * 9, 17),
    ("hello", 48),
    ("blue", 1),
    ("the sky is red and the sun is blue " * 3, 25),
    ("x y z", 48),
    ("What is the capital of France?", 9),
]


def _conversation(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("batching") / "tiny")


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> tuple[Any, Any]:
    from phi_finetune.local.registry import load_chat_model

    return load_chat_model(str(model_dir))


@pytest.fixture(scope="module")
def alone(loaded: tuple[Any, Any]) -> list[str]:
    """Each case generated on its own, unpadded (the path the server used before batching)."""
    model, tokenizer = loaded
    return [
        generate(
            model, tokenizer, [_conversation(text)], {"max_new_tokens": n, "do_sample": False}
        )[0]
        for text, n in CASES
    ]


def test_one_padded_batch_gives_each_row_its_answer_alone(
    loaded: tuple[Any, Any], alone: list[str]
) -> None:
    model, tokenizer = loaded
    prompts = encode_prompts(tokenizer, [_conversation(text) for text, _ in CASES])
    assert len({len(ids) for ids in prompts}) > 4  # really different lengths: padding happens
    streamed: dict[int, list[str]] = {i: [] for i in range(len(CASES))}
    jobs = [
        GenerationJob(
            prompt_ids=ids,
            max_new_tokens=n,
            # Every other row streams: streaming rows share the batch too.
            on_text=(lambda piece, i=index: streamed[i].append(piece)) if index % 2 else None,
        )
        for index, (ids, (_, n)) in enumerate(zip(prompts, CASES, strict=True))
    ]
    results = run_batch(model, tokenizer, jobs)
    assert [r.text for r in results] == alone
    for index, (result, (_, n)) in enumerate(zip(results, CASES, strict=True)):
        assert len(result.token_ids) <= n
        assert result.finish_reason == ("length" if len(result.token_ids) == n else "stop")
        if index % 2:
            assert "".join(streamed[index]) == result.text


def test_stop_strings_end_a_row_without_touching_the_others(
    loaded: tuple[Any, Any], alone: list[str]
) -> None:
    model, tokenizer = loaded
    prompts = encode_prompts(tokenizer, [_conversation(text) for text, _ in CASES[:2]])
    target = alone[1]
    stop = target[5:7]
    jobs = [
        GenerationJob(prompt_ids=prompts[0], max_new_tokens=CASES[0][1]),
        GenerationJob(prompt_ids=prompts[1], max_new_tokens=CASES[1][1], stop=(stop,)),
    ]
    first, second = run_batch(model, tokenizer, jobs)
    assert first.text == alone[0]
    assert second.text == target[: target.find(stop)] and second.finish_reason == "stop"


def test_batcher_groups_concurrent_requests_and_answers_each_alone(
    loaded: tuple[Any, Any], alone: list[str]
) -> None:
    model, tokenizer = loaded
    prompts = encode_prompts(tokenizer, [_conversation(text) for text, _ in CASES])
    batcher = Batcher(model, tokenizer, window_s=0.2, max_size=len(CASES))
    start = threading.Barrier(len(CASES))

    def submit(index: int) -> JobResult:
        batcher.announce()  # as the server does when a request comes in
        start.wait()
        job = GenerationJob(prompt_ids=prompts[index], max_new_tokens=CASES[index][1])
        future = batcher.submit(job)
        batcher.withdraw()
        return future.result(timeout=60)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(CASES)) as pool:
            results = list(pool.map(submit, range(len(CASES))))
    finally:
        batcher.stop()
    assert [r.text for r in results] == alone
    assert max(batcher.batch_sizes) > 1  # they shared generate calls
    assert sum(size * count for size, count in batcher.batch_sizes.items()) == len(CASES)


def test_batcher_caps_the_batch_size_and_keeps_sampled_requests_apart(
    loaded: tuple[Any, Any],
) -> None:
    model, tokenizer = loaded
    prompts = encode_prompts(tokenizer, [_conversation(text) for text, _ in CASES])
    seen: list[list[GenerationJob]] = []

    def runner(model: Any, tokenizer: Any, jobs: Any) -> list[JobResult]:
        seen.append(list(jobs))
        return run_batch(model, tokenizer, jobs)

    batcher = Batcher(model, tokenizer, window_s=0.0, max_size=3, runner=runner)
    sampled = GenerationJob(
        prompt_ids=prompts[0], max_new_tokens=4, options={"do_sample": True, "temperature": 0.7}
    )
    gone = GenerationJob(prompt_ids=prompts[1], max_new_tokens=4)
    gone.cancel()
    greedy = [GenerationJob(prompt_ids=ids, max_new_tokens=4) for ids in prompts]
    # Queue everything before the worker starts, so the caps decide the batches.
    for job in [*greedy[:2], sampled, gone, *greedy[2:]]:
        batcher._queue.put(job)
    try:
        batcher.submit(GenerationJob(prompt_ids=prompts[2], max_new_tokens=4)).result(timeout=60)
        for job in [*greedy, sampled]:
            job.future.result(timeout=60)
    finally:
        batcher.stop()
    assert max(len(batch) for batch in seen) == 3
    assert [sampled] in seen  # alone
    assert all(gone not in batch for batch in seen)
    assert gone.future.result().finish_reason == "cancelled"


def test_a_lone_request_does_not_wait_for_the_window(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    (ids,) = encode_prompts(tokenizer, [_conversation("hi")])
    batcher = Batcher(model, tokenizer, window_s=5.0, max_size=8)
    try:
        started = time.monotonic()
        batcher.submit(GenerationJob(prompt_ids=ids, max_new_tokens=1)).result(timeout=60)
        assert time.monotonic() - started < 4.0  # not held for the 5 s window
    finally:
        batcher.stop()


def test_batcher_refuses_bad_settings(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    with pytest.raises(ValueError, match="window_s"):
        Batcher(model, tokenizer, window_s=-1)
    with pytest.raises(ValueError, match="max_size"):
        Batcher(model, tokenizer, max_size=0)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[LocalServer]:
    with LocalServer(model_dir, threads=1, batch_window_ms=100, max_batch_size=16) as running:
        yield running


def _chat(server: LocalServer, text: str, n: int, stream: bool) -> str:
    body = {
        "messages": _conversation(text),
        "temperature": 0,
        "max_tokens": n,
        "stream": stream,
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server.key}"}
    status, raw = server.request("POST", "/v1/chat/completions", json.dumps(body).encode(), headers)
    assert status == 200, raw
    if not stream:
        return str(json.loads(raw)["choices"][0]["message"]["content"])
    pieces = []
    for event in raw.decode().split("\n\n"):
        data = event.removeprefix("data: ").strip()
        if data and data != "[DONE]":
            for choice in json.loads(data)["choices"]:
                pieces.append(choice["delta"].get("content") or "")
    return "".join(pieces)


def test_server_batches_concurrent_score_chat_and_stream_requests(
    server: LocalServer, alone: list[str]
) -> None:
    start = threading.Barrier(len(CASES))

    def call(index: int) -> str:
        text, n = CASES[index]
        start.wait()
        if index % 3 == 0:
            greedy = {"max_new_tokens": n, "do_sample": False}
            return server.score([_conversation(text)], greedy).text
        return _chat(server, text, n, stream=index % 3 == 2)

    with concurrent.futures.ThreadPoolExecutor(len(CASES)) as pool:
        answers = list(pool.map(call, range(len(CASES))))
    assert answers == alone
    status, body = server.request("GET", "/health")
    assert status == 200
    assert json.loads(body)["largest_batch"] > 1
