"""Local backend: MLflow registry round trip and the HTTP scoring endpoint."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("mlflow")

from phi_finetune.errors import LocalBackendError, WaitTimeoutError
from phi_finetune.local._chat import generate
from phi_finetune.local.registry import (
    LocalRegistry,
    RegisteredModel,
    conversations_from_input,
)
from phi_finetune.local.results import TrainingResult
from phi_finetune.local.server import LocalServer
from phi_finetune.local.tiny_model import build_tiny_model
from phi_finetune.local.training import LocalTrainer
from phi_finetune.scoring import build_request, parse_response

pytestmark = pytest.mark.slow

CONVERSATION = [{"role": "user", "content": "the cat sat on the mat"}]
GREEDY = {"max_new_tokens": 12, "do_sample": False}


def _records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    vocabulary = "the a cat dog sat on mat sun sky blue red"
    words = vocabulary.split()
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(rng.choice(words) for _ in range(8))},
                {"role": "assistant", "content": "Paris is the capital of France."},
            ]
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalTrainer, TrainingResult]:
    root = tmp_path_factory.mktemp("local-serving")
    data = _records(16)
    tiny = build_tiny_model(root / "tiny", texts=data)
    trainer = LocalTrainer(
        tiny,
        output_dir=root / "run",
        parameters={"max_steps": 4, "learning_rate": 0.01, "per_device_train_batch_size": 8},
        device="cpu",
    )
    return trainer, trainer.train(data)


@pytest.fixture(scope="module")
def registered(
    trained: tuple[LocalTrainer, TrainingResult], tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalRegistry, RegisteredModel]:
    registry = LocalRegistry(tmp_path_factory.mktemp("state"))
    _, result = trained
    assert result.merged_dir is not None
    return registry, registry.log_model(result.merged_dir, name="tiny-chat", alias="champion")


@pytest.fixture(scope="module")
def server(
    registered: tuple[LocalRegistry, RegisteredModel],
) -> Any:
    registry, version = registered
    with LocalServer(
        version.model_uri,
        tracking_uri=registry.tracking_uri,
        max_new_tokens_limit=64,
        max_body_bytes=20_000,
        max_batch=4,
    ) as running:
        yield running
    assert not running.running


# --------------------------------------------------------------------------- registry


def test_registered_model_reproduces_trained_greedy_output(
    trained: tuple[LocalTrainer, TrainingResult],
    registered: tuple[LocalRegistry, RegisteredModel],
) -> None:
    trainer, _ = trained
    registry, version = registered
    assert version.version == "1" and version.alias == "champion"
    assert version.model_uri == "models:/tiny-chat@champion"
    expected = generate(trainer.model, trainer.tokenizer, [CONVERSATION], GREEDY)
    assert expected[0]  # something was generated
    loaded = registry.load(version.model_uri)
    body = build_request([CONVERSATION], GREEDY)
    assert loaded.predict(body) == expected
    # Also by version number, and as a DataFrame with params.
    import pandas as pd

    by_version = registry.load(version.version_uri)
    frame = pd.DataFrame({"messages": [CONVERSATION]})
    assert by_version.predict(frame, params=GREEDY) == expected
    assert registry.get("tiny-chat", alias="champion").version == "1"


def test_pyfunc_input_validation() -> None:
    with pytest.raises(LocalBackendError, match="must end with a user turn"):
        conversations_from_input(
            {"input_data": {"input_string": [[{"role": "assistant", "content": "x"}]]}}
        )
    conversations, params = conversations_from_input(
        {"input_string": CONVERSATION, "parameters": {"max_new_tokens": 3}}, {"max_new_tokens": 9}
    )
    assert conversations == [CONVERSATION] and params == {"max_new_tokens": 3}


# --------------------------------------------------------------------------- server


def _post(server: LocalServer, body: Any, auth: str | None = "bearer") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {server.key}"
    elif auth == "raw":
        headers["Authorization"] = server.key
    elif auth is not None:
        headers["Authorization"] = auth
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    status, answer = server.request("POST", "/score", raw, headers)
    return status, json.loads(answer)


def test_server_scores_like_the_trained_model(
    server: LocalServer, trained: tuple[LocalTrainer, TrainingResult]
) -> None:
    trainer, _ = trained
    expected = generate(trainer.model, trainer.tokenizer, [CONVERSATION], GREEDY)
    assert server.scoring_uri.startswith("http://127.0.0.1:")
    status, answer = _post(server, build_request([CONVERSATION], GREEDY))
    assert status == 200
    assert parse_response(json.dumps(answer)).outputs == tuple(expected)
    assert answer == {"output": expected[0]}
    # The key without the Bearer prefix is accepted too.
    assert _post(server, build_request([CONVERSATION], GREEDY), auth="raw")[0] == 200
    # A batch answers a list.
    status, answer = _post(server, build_request([CONVERSATION, CONVERSATION], GREEDY))
    assert status == 200 and parse_response(json.dumps(answer)).outputs == tuple(expected * 2)
    assert server.score([CONVERSATION], GREEDY).text == expected[0]


def test_server_health_needs_no_key(server: LocalServer) -> None:
    for path in ("/", "/health"):
        status, body = server.request("GET", path)
        assert status == 200 and json.loads(body)["status"] == "healthy"


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", "wrong-key", "Basic abc"])
def test_server_rejects_missing_or_wrong_key(server: LocalServer, auth: str | None) -> None:
    status, answer = _post(server, build_request([CONVERSATION], GREEDY), auth=auth)
    assert status == 401
    assert "Authorization: Bearer" in answer["error"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        ([1, 2], 422, "input_data"),
        ({"input_data": {}}, 422, "input_string"),
        ({"input_data": {"input_string": []}}, 422, "non-empty"),
        (
            {"input_data": {"input_string": [[{"role": "assistant", "content": "hi"}]]}},
            422,
            "must end with a user turn",
        ),
        (
            {"input_data": {"input_string": [[{"role": "robot", "content": "hi"}]]}},
            422,
            "role must be one of",
        ),
        (
            {"input_data": {"input_string": [CONVERSATION], "parameters": {"max_new_tokens": 65}}},
            422,
            "max_new_tokens must be an integer in [1, 64]",
        ),
        (
            {"input_data": {"input_string": [CONVERSATION], "parameters": {"top_p": "high"}}},
            422,
            "top_p",
        ),
        ({"input_data": {"input_string": [CONVERSATION] * 5}}, 422, "at most 4 conversations"),
        (b"x" * 30_000, 413, "over the limit"),
    ],
)
def test_server_rejects_bad_bodies_clearly(
    server: LocalServer, body: Any, status: int, fragment: str
) -> None:
    got, answer = _post(server, body)
    assert got == status
    assert fragment in answer["error"]
    assert "Traceback" not in answer["error"]


def test_server_key_is_not_on_the_command_line_or_in_repr(server: LocalServer) -> None:
    assert server.key not in repr(server)
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode("utf-8", "replace")
    assert server.key not in cmdline
    assert "127.0.0.1" in server.scoring_uri


def _gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_stop_leaves_no_process(trained: tuple[LocalTrainer, TrainingResult]) -> None:
    _, result = trained
    assert result.merged_dir is not None
    server = LocalServer(result.merged_dir, max_new_tokens_limit=8).start()
    pid = server.pid
    assert server.score([CONVERSATION], {"max_new_tokens": 4, "do_sample": False}).outputs
    server.stop()
    assert _gone(pid) and not server.running
    server.stop()  # idempotent


def test_failed_start_leaves_no_process(tmp_path: Path) -> None:
    server = LocalServer(tmp_path / "no-model-here", startup_timeout=120)
    with pytest.raises(LocalBackendError, match="exited with code") as info:
        server.start()
    assert "no-model-here" in str(info.value)
    assert server.key not in str(info.value)
    assert _gone(server.pid)


def test_start_timeout_leaves_no_process(trained: tuple[LocalTrainer, TrainingResult]) -> None:
    _, result = trained
    assert result.merged_dir is not None
    server = LocalServer(result.merged_dir, startup_timeout=0.3)
    with pytest.raises(WaitTimeoutError):
        server.start()
    assert _gone(server.pid)
