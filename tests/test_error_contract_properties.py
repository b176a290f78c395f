"""The error contract, proved with generated input: every public function that takes user data
either succeeds or raises one of :data:`ALLOWED` (never ``TypeError``, ``KeyError``,
``AttributeError``, ``RecursionError``, ``UnicodeError`` or a bare ``ValueError`` from inside).

:data:`ALLOWED` is the one place the allowed exception types are listed: the library's base
class :class:`~phi_finetune.errors.PhiFinetuneError`, whose ``ValueError`` subclasses
(``ConfigurationError``, ``InvalidNameError``, ``DataValidationError``, ``ParameterError``) are
documented in :mod:`phi_finetune.errors`. Example counts stay small: the file runs in seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phi_finetune import names
from phi_finetune.config import RunConfig, WorkspaceConfig, load_run_config
from phi_finetune.config.checks import _specs
from phi_finetune.config.sections import SECTIONS
from phi_finetune.data import UltraChatDataset, scoring_request_from_row
from phi_finetune.endpoint import Endpoint, request_from_file
from phi_finetune.errors import (
    DataValidationError,
    InvocationError,
    ParameterError,
    PhiFinetuneError,
)
from phi_finetune.interface import load_pinned_interface
from phi_finetune.parameters import FineTuneParameters
from phi_finetune.scoring import build_request, parse_response

#: The only exceptions a public call may raise for bad user data.
ALLOWED: tuple[type[BaseException], ...] = (PhiFinetuneError,)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def holds(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``call``; a result, or ``None`` when it raised an allowed error. Anything else fails
    the test with the exception."""
    try:
        return call(*args, **kwargs)
    except ALLOWED:
        return None


# ----------------------------------------------------------------------------- strategies
surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud83d", "ok\ud83d"])
strings = st.text(max_size=12) | surrogates | st.sampled_from(["user", "assistant", "system", ""])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | strings
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=12,
)
roles = st.sampled_from(["user", "assistant", "system"]) | json_values
message = st.fixed_dictionaries(
    {}, optional={"role": roles, "content": strings | json_values, "name": json_values}
)
messages = st.lists(message | json_values, max_size=4) | json_values
rows = st.fixed_dictionaries(
    {}, optional={"messages": messages, "prompt": json_values, "prompt_id": json_values}
)
generation = st.dictionaries(
    st.sampled_from(
        [
            "temperature",
            "top_p",
            "top_k",
            "do_sample",
            "max_new_tokens",
            "num_beams",
            "repetition_penalty",
            "return_full_text",
            "other",
        ]
    )
    | strings,
    json_values,
    max_size=4,
)
_SECTION_KEYS = {name: sorted(_specs(cls)) for name, cls in SECTIONS.items()}
_TOP_KEYS = sorted(k for k, v in _specs(RunConfig).items() if v.section is None)
toml_dicts = st.dictionaries(
    st.sampled_from(sorted(_SECTION_KEYS)),
    st.sampled_from(sorted(_SECTION_KEYS)).flatmap(
        lambda section: st.dictionaries(
            st.sampled_from(_SECTION_KEYS[section]) | strings, json_values, max_size=4
        )
    )
    | json_values,
    max_size=3,
) | st.dictionaries(st.sampled_from(_TOP_KEYS) | strings, json_values, max_size=3)
_INPUTS = sorted(load_pinned_interface().inputs)
parameter_dicts = st.dictionaries(st.sampled_from(_INPUTS) | strings, json_values, max_size=5)


def deep(depth: int = 3000) -> list[Any]:
    outer: list[Any] = []
    current = outer
    for _ in range(depth):
        inner: list[Any] = []
        current.append(inner)
        current = inner
    return outer


class FakeResponse:
    status_code = 200
    content = b'{"output": "fine"}'
    text = content.decode()

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}


class FakeSession:
    """Answers every POST with 200 ``{"output": "fine"}``; keeps the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def post(self, url: str, *, data: bytes, headers: Any, timeout: float) -> FakeResponse:
        self.bodies.append(data)
        return FakeResponse()


def strict_json(body: Any) -> None:
    """What a successful call returns can be sent: strict JSON, valid UTF-8."""
    json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")


# ----------------------------------------------------------------------------- scoring
@SETTINGS
@given(conversations=messages, parameters=generation | json_values)
@example(conversations=[None], parameters=None)
@example(conversations=[{"role": None}], parameters=None)
@example(conversations=[{"role": "user", "content": "a\ud800"}], parameters=None)
@example(conversations=[{"role": "user", "content": "hi"}], parameters=[1, 2])
@example(conversations=[{"role": "user", "content": "hi"}], parameters={"temperature": math.nan})
@example(conversations="hello", parameters=None)
@example(conversations=None, parameters=None)
def test_build_request_raises_only_the_library_error(conversations: Any, parameters: Any) -> None:
    body = holds(build_request, conversations, parameters)
    if body is not None:
        strict_json(body)
        assert body["input_data"]["input_string"]


@SETTINGS
@given(row=rows | json_values, parameters=generation)
@example(row={"messages": [None]}, parameters={})
@example(row={"messages": [{"role": "user", "content": "\udfff"}]}, parameters={})
def test_scoring_request_from_row_raises_only_the_library_error(
    row: Any, parameters: dict[str, Any]
) -> None:
    body = holds(scoring_request_from_row, row, parameters)
    if body is not None:
        strict_json(body)


@SETTINGS
@given(conversation=messages, parameters=generation)
@example(conversation=[None], parameters={})
@example(conversation=[{"role": "user", "content": "x\ud800"}], parameters={})
@example(conversation=[{"role": "user", "content": "x"}], parameters={"num_beams": 0})
def test_endpoint_invoke_raises_only_the_library_error(
    conversation: Any, parameters: dict[str, Any]
) -> None:
    session = FakeSession()
    endpoint = Endpoint("ep", "http://127.0.0.1:9/score", "k", session=session)  # type: ignore[arg-type]
    if not all(isinstance(name, str) for name in parameters):
        return  # not expressible as **kwargs
    result = holds(endpoint.invoke, conversation, **parameters)
    if result is not None:
        assert result.text == "fine" and len(session.bodies) == 1
        json.loads(session.bodies[0].decode("utf-8"))
    else:
        assert not session.bodies  # nothing bad is sent


@SETTINGS
@given(body=json_values)
@example(body={"x": {1, 2}})
def test_endpoint_invoke_request_raises_only_the_library_error(body: Any) -> None:
    endpoint = Endpoint("ep", "http://127.0.0.1:9/score", "k", session=FakeSession())  # type: ignore[arg-type]
    holds(endpoint.invoke_request, body)


@SETTINGS
@given(content=st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()))
@example(content=b"[" * 5000)
@example(content=b"\xff\xfe")
def test_request_from_file_raises_only_the_library_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.json"
        path.write_bytes(content)
        body = holds(request_from_file, path)
    if body is not None:
        strict_json(body)


@SETTINGS
@given(body=st.binary(max_size=60) | json_values)
def test_parse_response_raises_only_invocation_error(body: Any) -> None:
    with contextlib.suppress(InvocationError):
        parse_response(body)


# ----------------------------------------------------------------------------- data
@settings(SETTINGS, max_examples=20)
@given(records=st.lists(rows | json_values, max_size=4))
@example(records=[{"messages": [{"role": "user", "content": "a\ud800"}, {"role": "assistant"}]}])
@example(
    records=[
        {
            "messages": [
                {"role": "user", "content": "a\ud800"},
                {"role": "assistant", "content": "b"},
            ]
        }
    ]
)
def test_dataset_validate_stats_prepare_raise_only_the_library_error(records: list[Any]) -> None:
    dataset = UltraChatDataset.from_records(records)
    holds(dataset.validate, mode="report")
    holds(dataset.validate, mode="strict")
    holds(dataset.stats)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("report", "skip"):
            prepared = holds(dataset.prepare, Path(tmp) / mode, on_invalid=mode)
            if prepared is not None:  # what was written reads back
                written = UltraChatDataset.from_files(prepared.train).head(100)
                assert len(written) == prepared.counts["train"]


@settings(SETTINGS, max_examples=25)
@given(
    lines=st.lists(
        st.binary(max_size=40).filter(lambda b: b"\n" not in b)
        | json_values.map(lambda v: json.dumps(v).encode())
        | messages.map(lambda m: json.dumps({"messages": m}, ensure_ascii=True).encode()),
        max_size=5,
    ),
    suffix=st.sampled_from(["train.jsonl", "train.json"]),
    as_array=st.booleans(),
)
def test_data_files_raise_only_the_library_error(
    lines: list[bytes], suffix: str, as_array: bool
) -> None:
    content = b"[" + b",".join(lines) + b"]" if as_array else b"\n".join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / suffix
        path.write_bytes(content)
        dataset = holds(UltraChatDataset.from_files, path, max_line_bytes=200)
        if dataset is None:
            return
        holds(dataset.validate, mode="report")
        holds(dataset.stats)
        holds(dataset.head, 3)
        holds(dataset.prepare, Path(tmp) / "out", on_invalid="report")


def test_prepare_report_keeps_a_lone_surrogate_row_that_needs_a_derived_prompt_id(
    tmp_path: Path,
) -> None:
    records = [
        {
            "messages": [
                {"role": "user", "content": "a\ud800"},
                {"role": "assistant", "content": "b"},
            ]
        }
    ]
    prepared = UltraChatDataset.from_records(records).prepare(tmp_path, on_invalid="report")
    assert prepared.counts["train"] == 1
    assert prepared.report.by_code == {"invalid-surrogate": 1}
    (row,) = UltraChatDataset.from_files(prepared.train).head(2)
    assert row["messages"][0]["content"] == "a\ud800" and len(row["prompt_id"]) == 64


# ----------------------------------------------------------------------------- config
@SETTINGS
@given(data=toml_dicts | json_values)
def test_run_config_from_dict_raises_only_the_library_error(data: Any) -> None:
    holds(RunConfig.from_dict, data)
    holds(RunConfig.from_dict, data, base_dir="/nonexistent")


@SETTINGS
@given(text=st.text(max_size=80) | toml_dicts.map(lambda d: _toml_or_text(d)))
@example(text="x = " + "[" * 3000 + "]" * 3000)
@example(text="[model]\nname = '\\ud800'")
def test_load_run_config_raises_only_the_library_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phi-finetune.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        holds(load_run_config, path)


def _toml_or_text(data: dict[str, Any]) -> str:
    import tomli_w

    try:
        return tomli_w.dumps(data)
    except Exception:
        return repr(data)


@SETTINGS
@given(content=st.binary(max_size=60) | json_values.map(json.dumps))
@example(content="[" * 5000)
def test_workspace_config_file_raises_only_the_library_error(content: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        holds(WorkspaceConfig.from_config_file, path)


@SETTINGS
@given(user=parameter_dicts | json_values, model=parameter_dicts)
@example(user={1: 2}, model={})
@example(user=[1, 2], model={})
def test_fine_tune_parameters_raise_only_parameter_error(user: Any, model: Any) -> None:
    with contextlib.suppress(ParameterError):
        FineTuneParameters.build(user, model_defaults=model)


# ----------------------------------------------------------------------------- names
NAME_FUNCTIONS: list[Callable[[Any], Any]] = [
    names.validate_endpoint_name,
    names.validate_deployment_name,
    names.validate_model_name,
    names.validate_model_version,
    names.validate_job_name,
    names.sanitize_endpoint_name,
    names.sanitize_model_name,
    names.default_model_name,
    names.endpoint_name_problems,
    names.generate_endpoint_name,
]


@SETTINGS
@given(value=json_values)
@example(value=None)
@example(value={"role": None})
def test_names_raise_only_the_library_error(value: Any) -> None:
    for function in NAME_FUNCTIONS:
        result = holds(function, value)
        if function is names.endpoint_name_problems:
            assert isinstance(result, list) and (result or isinstance(value, str))


# ----------------------------------------------------------------------------- regressions
@pytest.mark.parametrize(
    "call",
    [
        lambda: Endpoint("ep", "http://127.0.0.1:9/", "k", session=FakeSession()).invoke_request(  # type: ignore[arg-type]
            {"input_data": deep()}
        ),
        lambda: RunConfig.from_dict({"finetune": {"parameters": {"learning_rate": deep()}}}),
        lambda: FineTuneParameters.build({"learning_rate": deep()}),
        lambda: build_request([[{"role": "user", "content": "hi", "extra": deep()}]]),
    ],
    ids=["invoke_request", "run-config", "parameters", "build_request"],
)
def test_deeply_nested_input_gives_the_library_error(call: Callable[[], Any]) -> None:
    with pytest.raises(ALLOWED):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_request([None]),
        lambda: build_request({"role": None}),
        lambda: build_request([{"role": "user", "content": "hi"}], [1]),  # type: ignore[arg-type]
        lambda: build_request([{"role": "user", "content": "\ud800"}]),
        lambda: build_request([{"role": "user", "content": "hi"}], {"temperature": math.nan}),
        lambda: build_request([{"role": "user", "content": "hi"}], {"top_k": -1}),
        lambda: build_request([{"role": "user", "content": "hi"}], {"repetition_penalty": 0}),
        lambda: scoring_request_from_row({"messages": [None]}),
        lambda: Endpoint("ep", "http://127.0.0.1:9/", "k", session=FakeSession()).invoke(  # type: ignore[arg-type]
            [None]
        ),
    ],
    ids=[
        "messages-[None]",
        "bare-message-without-content",
        "parameters-not-a-mapping",
        "lone-surrogate",
        "temperature-nan",
        "top_k-negative",
        "repetition_penalty-zero",
        "row-messages-[None]",
        "invoke-[None]",
    ],
)
def test_bad_scoring_input_is_a_data_validation_error(call: Callable[[], Any]) -> None:
    with pytest.raises(DataValidationError) as caught:
        call()
    assert isinstance(caught.value, ValueError)  # still caught by `except ValueError`
    assert "input_string" in str(caught.value) or "parameters" in str(caught.value)
