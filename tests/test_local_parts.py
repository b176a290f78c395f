"""The local trainer's parts on their own: parameters, batching, device choice, tracking, layout."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.config.checks import coerce
from phi_finetune.errors import LocalBackendError
from phi_finetune.local import examples as local_examples
from phi_finetune.local import model_loading, parameters, results, training
from phi_finetune.local.examples import length_batches
from phi_finetune.local.tracking import MlflowTracker, artifact_location_beside

# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("16", int, 16),
        (" 2 ", int, 2),
        ("1e3", int, 1000),
        (4.0, int, 4),
        (7, int, 7),
        ("2e-5", float, 2e-5),
        (3, float, 3.0),
        ("true", bool, True),
        (" No", bool, False),
        (1, bool, True),
        (False, bool, False),
        (" cosine ", str, "cosine"),
        (16, str, "16"),
    ],
)
def test_coerce_converts_what_toml_and_the_cli_give(value: Any, kind: type, expected: Any) -> None:
    result = coerce(value, kind, mode="loose")
    assert result == expected and type(result) is kind


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, int),
        ("1.5", int),
        (1.5, int),
        ("x", int),
        (False, float),
        ("fast", float),
        ("maybe", bool),
        (2, bool),
        (1.0, bool),
    ],
)
def test_coerce_rejects_what_does_not_convert(value: Any, kind: type) -> None:
    with pytest.raises((TypeError, ValueError)):
        coerce(value, kind, mode="loose")


def test_ignored_parameters_say_why() -> None:
    resolved, ignored = parameters.resolve_parameters(
        {"compute_eval": "cpu-cluster", "ds_config": "x.json", "lora_r": None}
    )
    assert resolved["lora_r"] == parameters.LOCAL_PARAMETERS["lora_r"][1]  # None keeps default
    reasons = {i.name: i.reason for i in ignored}
    assert reasons == {
        "compute_eval": "Azure ML compute settings do not apply to the local backend",
        "ds_config": "DeepSpeed is not used by the local backend",
    }


# --------------------------------------------------------------------------- layout


def test_old_import_paths_give_the_same_objects() -> None:
    import phi_finetune.local as local

    homes = {
        "AZURE_ONLY_PARAMETERS": parameters,
        "LOCAL_PARAMETERS": parameters,
        "IgnoredParameter": parameters,
        "resolve_parameters": parameters,
        "StepMetrics": results,
        "TrainingResult": results,
        "load_conversations": local_examples,
        "load_model_and_tokenizer": model_loading,
    }
    assert set(training.__all__) == {*homes, "LocalTrainer", "train_lora"}
    for name, home in homes.items():
        assert getattr(training, name) is getattr(home, name), name
    for name in local.__all__:
        assert getattr(local, name) is not None
    assert local.IgnoredParameter is parameters.IgnoredParameter
    assert local.TrainingResult is results.TrainingResult
    assert local.LocalTrainer is training.LocalTrainer


def test_registry_does_not_load_training_and_parameters_load_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import phi_finetune.local.parameters\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules)\n"
        "import phi_finetune.local.registry\n"
        "print(json.dumps([heavy, 'phi_finetune.local.training' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    heavy, training_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert heavy == [] and training_loaded is False


# --------------------------------------------------------------------------- batching


def _fake_examples(lengths: list[int]) -> list[tuple[list[int], list[bool]]]:
    return [([1] * n, [True] * n) for n in lengths]


def test_evaluation_batches_are_sorted_by_length() -> None:
    examples = _fake_examples([5, 1, 4, 2, 3])
    batches = length_batches(examples, 2, None)
    assert batches == [[1, 3], [4, 2], [0]]


def test_training_batches_cover_every_example_once_and_pad_little() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(1, 400) for _ in range(300)]
    examples = _fake_examples(lengths)
    batches = length_batches(examples, 8, random.Random(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(300))
    assert all(1 <= len(b) <= 8 for b in batches)
    assert batches == length_batches(examples, 8, random.Random(0))  # same seed, same order
    assert batches != length_batches(examples, 8, random.Random(1))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    unsorted = sum(
        len(b) * max(lengths[i] for i in b)
        for b in (list(range(k, min(k + 8, 300))) for k in range(0, 300, 8))
    )
    assert padded < 0.8 * unsorted  # bucketing pads less than batching in file order


# --------------------------------------------------------------------------- device


def test_cpu_runs_in_float32_and_reports_a_half_precision_request() -> None:
    torch = pytest.importorskip("torch")
    hardware = model_loading.Hardware.choose("cpu", "bf16", seed=0)
    assert (hardware.device, hardware.precision, hardware.use_bf16) == ("cpu", "fp32", False)
    assert hardware.ignored is not None and hardware.ignored.name == "precision"
    assert hardware.ignored.reason == "CPU training runs in float32"
    assert hardware.dtype is torch.float32
    assert isinstance(hardware.autocast(), contextlib.nullcontext)
    assert model_loading.Hardware.choose("cpu", "auto", seed=0).ignored is None


def test_cuda_request_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_loading.pick_device("auto") == "cpu"
    with pytest.raises(LocalBackendError, match="CUDA is not available"):
        model_loading.Hardware.choose("cuda:0", "auto", seed=0)


# --------------------------------------------------------------------------- tracking


def test_tracker_without_a_uri_does_nothing() -> None:
    tracker = MlflowTracker.start(None)
    assert tracker.run_id is None and tracker.client is None
    step = results.StepMetrics(step=1, epoch=0.5, loss=2.0, tokens_per_s=10.0)
    tracker.log_params({"lora_r": 8})
    tracker.log_step(step)
    tracker.log_metric("eval_loss", 1.0, 1)
    tracker.finish("FINISHED")
    assert "run_id=None" in repr(tracker)


def test_artifacts_go_beside_a_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert artifact_location_beside(uri) == (tmp_path / "state" / "mlartifacts").as_uri()
    assert artifact_location_beside("http://127.0.0.1:5000") is None
