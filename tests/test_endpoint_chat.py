"""Endpoint.chat / Endpoint.stream (issue 16, item 1): managed online endpoints on FakeAzureML
(the chat route, and the fallback to /score where a deployment lacks it) and the helpers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

import requests
from azure.ai.ml.entities import (
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
)

from phi_finetune.endpoint import Endpoint
from phi_finetune.endpoint_chat import (
    apply_stop,
    chat_body,
    chat_url,
    parse_chat_response,
    score_fallback,
    stream_text,
)
from phi_finetune.errors import DataValidationError, InvocationError
from phi_finetune.testing import FakeAzureML
from phi_finetune.testing._routes_endpoints import CHAT_ROUTE_TAG

USER = [{"role": "user", "content": "What is 2+2?"}]


def _ready(fake: FakeAzureML, *, chat: bool = True, name: str = "ep-chat-1") -> Endpoint:
    ml = fake.workspace_client()
    endpoint = ml.online_endpoints.begin_create_or_update(
        ManagedOnlineEndpoint(name=name, auth_mode="key")
    ).result()
    if "job1" not in fake.jobs:
        fake.add_completed_job("job1")  # the model below comes from its output
    ml.models.create_or_update(
        Model(
            name="phi-ft",
            version="1",
            path="azureml://jobs/job1/outputs/trained_model",
            type="mlflow_model",
        )
    )
    ml.online_deployments.begin_create_or_update(
        ManagedOnlineDeployment(
            name="demo",
            endpoint_name=name,
            model="azureml:phi-ft:1",
            instance_type="Standard_NC6s_v3",
            instance_count=1,
            tags={} if chat else {CHAT_ROUTE_TAG: "off"},
        )
    ).result()
    endpoint.traffic = {"demo": 100}
    ml.online_endpoints.begin_create_or_update(endpoint).result()
    return Endpoint.from_name(ml, name, session=requests.Session(), sleep=lambda s: None)


def test_chat_on_a_managed_endpoint_uses_the_chat_route(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    assert endpoint.chat_uri == endpoint.scoring_uri.replace("/score", "/v1/chat/completions")
    result = endpoint.chat(USER, temperature=0, max_tokens=20)
    assert result.text == "echo: What is 2+2?" and result.shape == "chat"
    assert result.raw["object"] == "chat.completion"
    (sent,) = fake_azureml.find_requests("POST", "/v1/chat/completions")
    assert sent.json == {"messages": USER, "temperature": 0, "max_tokens": 20}
    assert sent.headers["Authorization"] == "***"  # the fake's log redacts the key it got
    assert sent.headers["azureml-model-deployment"] == "demo"
    assert fake_azureml.find_requests("POST", "/score") == []


def test_stream_on_a_managed_endpoint_yields_pieces(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    pieces = list(endpoint.stream(USER, temperature=0))
    assert "".join(pieces) == "echo: What is 2+2?" and len(pieces) > 1
    (sent,) = fake_azureml.find_requests("POST", "/v1/chat/completions")
    assert sent.json["stream"] is True


def test_n_choices_from_the_chat_route(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    assert endpoint.chat(USER, n=2).outputs == ("echo: What is 2+2?",) * 2


def test_without_the_route_chat_falls_back_to_score_and_says_so(
    fake_azureml: FakeAzureML, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = _ready(fake_azureml, chat=False)
    with caplog.at_level(logging.WARNING, logger="phi_finetune.endpoint"):
        result = endpoint.chat(USER, temperature=0, max_tokens=20, seed=3, stop=" 2+")
    assert result.text == "echo: What is"  # stop applied to the /score text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "does not serve" in warnings[0] and "/score" in warnings[0] and "seed" in warnings[0]
    (scored,) = fake_azureml.find_requests("POST", "/score")
    parameters = scored.json["input_data"]["parameters"]
    assert parameters["max_new_tokens"] == 20 and parameters["do_sample"] is False
    # The handle remembers: the next calls go straight to /score, no second warning.
    caplog.clear()
    fake_azureml.clear_requests()
    assert "".join(endpoint.stream(USER)) == "echo: What is 2+2?"
    assert fake_azureml.find_requests("POST", "/v1/chat/completions") == []
    assert len(fake_azureml.find_requests("POST", "/score")) == 1
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_the_endpoint_tag_turns_the_route_off_too(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    ml = fake_azureml.workspace_client()
    remote = ml.online_endpoints.get(endpoint.name)
    remote.tags = {CHAT_ROUTE_TAG: "off"}
    ml.online_endpoints.begin_create_or_update(remote).result()
    assert endpoint.chat(USER).text == "echo: What is 2+2?"
    assert len(fake_azureml.find_requests("POST", "/score")) == 1


def test_chat_errors_carry_the_status_and_no_key(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    from phi_finetune.testing import Reply

    fake_azureml.set_scorer(lambda payload, deployment: Reply(status=500, json={"e": "boom"}))
    with pytest.raises(InvocationError) as info:
        endpoint.chat(USER)
    assert info.value.status == 500
    key = fake_azureml.endpoint_keys(endpoint.name)[0]
    assert key not in str(info.value) and key not in repr(endpoint)
    with pytest.raises(InvocationError):
        list(endpoint.stream(USER))


def test_chat_retries_throttling_like_invoke(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    fake_azureml.inject_fault("POST", r"/v1/chat/completions", status=429, times=1)
    assert endpoint.chat(USER).text == "echo: What is 2+2?"
    assert len(fake_azureml.find_requests("POST", "/v1/chat/completions")) == 2


def test_chat_refuses_bad_messages_before_sending(fake_azureml: FakeAzureML) -> None:
    endpoint = _ready(fake_azureml)
    fake_azureml.clear_requests()
    with pytest.raises(DataValidationError, match="not valid") as info:
        endpoint.chat([{"role": "assistant", "content": "hi"}])
    assert "must end with a user turn" in str(info.value.problems[0].message)
    assert fake_azureml.find_requests("POST", "/v1/chat/completions") == []


# ---------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "https://ep.westus.inference.ml.azure.com/score",
            "https://ep.westus.inference.ml.azure.com/v1/chat/completions",
        ),
        ("http://127.0.0.1:5000/score", "http://127.0.0.1:5000/v1/chat/completions"),
        ("http://127.0.0.1:5000/v1", "http://127.0.0.1:5000/v1/chat/completions"),
        ("https://x.models.ai.azure.com/", "https://x.models.ai.azure.com/v1/chat/completions"),
        ("https://x/v1/chat/completions", "https://x/v1/chat/completions"),
    ],
)
def test_chat_url(uri: str, expected: str) -> None:
    assert chat_url(uri) == expected


def test_chat_body_maps_max_new_tokens_and_stream() -> None:
    body = chat_body(USER, {"max_new_tokens": 5, "stream": True})
    assert body == {"messages": USER, "max_tokens": 5}
    assert chat_body(USER, {}, stream=True)["stream"] is True


def test_stream_text_reads_events_and_stops_at_done() -> None:
    lines: list[Any] = [
        b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}',
        b"",
        b'data: {"choices": [{"index": 0, "delta": {"content": "he"}}, '
        b'{"index": 1, "delta": {"content": "x"}}]}',
        b": a comment",
        'data: {"choices": [{"index": 0, "delta": {"content": "llo"}}]}',
        b"data: [DONE]",
        b'data: {"choices": [{"index": 0, "delta": {"content": "never"}}]}',
    ]
    assert list(stream_text(lines)) == ["he", "llo"]
    assert list(stream_text(lines, choice=1)) == ["x"]
    with pytest.raises(InvocationError, match="failed while streaming: overloaded"):
        list(stream_text([b'data: {"error": {"message": "overloaded"}}']))
    with pytest.raises(InvocationError, match="not JSON"):
        list(stream_text([b"data: {oops"]))


def test_parse_chat_response_orders_choices_and_refuses_other_shapes() -> None:
    result = parse_chat_response(
        b'{"choices": [{"index": 1, "message": {"content": "b"}}, '
        b'{"index": 0, "message": {"content": "a"}}]}'
    )
    assert result.outputs == ("a", "b") and result.shape == "chat"
    with pytest.raises(InvocationError, match=r"not a chat\.completion"):
        parse_chat_response(b'{"output": "x"}')


def test_score_fallback_and_stop() -> None:
    params, n, dropped = score_fallback(
        {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "n": 3, "seed": 1, "stop": "x"}
    )
    assert params == {"max_new_tokens": 7, "temperature": 0.5, "do_sample": True, "top_p": 0.9}
    assert n == 3 and dropped == ["seed"]
    assert apply_stop("hello world", ["wor", "lo"]) == "hel"
    assert apply_stop("hello", None) == "hello"
