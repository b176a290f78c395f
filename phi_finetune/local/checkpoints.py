"""Resumable checkpoints of the local trainer, written atomically.

A checkpoint folder holds the LoRA adapter and tokenizer (``save_pretrained``),
``trainer_state.json`` (step, data position, history, a fingerprint of the settings) and
``training_state.pt`` (optimizer, scheduler and random-number-generator states). It is written
into a hidden temporary folder and renamed into place, so a kill leaves either the previous
checkpoint or the new one, never half of one. :func:`find_resumable` picks the checkpoint with
the highest step whose fingerprint matches the run being resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phi_finetune._atomic import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "TENSORS_FILE",
    "find_resumable",
    "fingerprint",
    "load_tensors",
    "prune_step_checkpoints",
    "read_state",
    "restore_run",
    "save_run",
    "write_checkpoint",
]

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "training_state.pt"
#: Parameters that do not change what is trained (a resume may change them).
_NOT_FINGERPRINTED = frozenset(
    {
        "logging_steps",
        "resume_from_checkpoint",
        "save_steps",
        "save_total_limit",
        "merge_lora_weights",
        "per_device_eval_batch_size",
        "gradient_checkpointing",
    }
)


def fingerprint(
    parameters: Mapping[str, Any], model_source: str, examples: Sequence[Any], world_size: int
) -> str:
    """A hash of what decides the training trajectory: settings, model and encoded data."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in parameters.items() if k not in _NOT_FINGERPRINTED}
    header = {"parameters": settings, "model": model_source, "world_size": world_size}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for tokens, mask in examples:
        digest.update(json.dumps([tokens, mask]).encode())
    return digest.hexdigest()[:32]


def write_checkpoint(
    target: Path,
    *,
    model: Any,
    tokenizer: Any,
    state: Mapping[str, Any],
    tensors: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (hidden temporary folder, then rename)."""
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if tensors is not None:
        import torch

        torch.save(dict(tensors), tmp / TENSORS_FILE)
        _fsync(tmp / TENSORS_FILE)
    atomic_write_json(tmp / STATE_FILE, dict(state))
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.replace(old)
        tmp.replace(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.replace(target)
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint (empty when missing or unreadable)."""
    try:
        value = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def load_tensors(checkpoint: Path) -> dict[str, Any]:
    """Optimizer, scheduler and generator states of a checkpoint (tensors and plain data)."""
    import torch

    loaded: dict[str, Any] = torch.load(checkpoint / TENSORS_FILE, weights_only=True)
    return loaded


def find_resumable(checkpoints: Path, expected: str) -> tuple[Path | None, int]:
    """The resumable checkpoint with the highest step written for ``expected`` settings,
    and how many resumable checkpoints were written for other settings."""
    best: tuple[int, Path] | None = None
    mismatched = 0
    if not checkpoints.is_dir():
        return None, 0
    for folder in checkpoints.iterdir():
        if folder.name.startswith(".") or not (folder / TENSORS_FILE).is_file():
            continue
        state = read_state(folder)
        if "position" not in state:
            continue
        if state.get("fingerprint") != expected:
            mismatched += 1
            continue
        step = int(state.get("step", 0))
        if best is None or step > best[0]:
            best = (step, folder)
    return (None if best is None else best[1]), mismatched


def prune_step_checkpoints(checkpoints: Path, limit: int) -> None:
    """Keep the newest ``limit`` ``step-N`` checkpoints (``-1`` keeps all)."""
    if limit < 1:
        return
    steps = sorted(
        (int(f.name.split("-", 1)[1]), f)
        for f in checkpoints.glob("step-*")
        if f.name.split("-", 1)[1].isdigit()
    )
    for _, folder in steps[:-limit]:
        shutil.rmtree(folder, ignore_errors=True)


def save_run(target: Path, run: Any) -> Path:
    """Write a resumable checkpoint of the trainer's run state ``run`` to ``target``."""
    import torch

    cuda = run.hardware.device.startswith("cuda")
    state = {
        "step": run.step,
        "epoch": run.epoch,
        "loss": run.history[-1].loss if run.history else None,
        "position": {"epoch": run.epoch, "next_group": run.next_group},
        "data_rng_state": _jsonable_rng(run.epoch_rng_state),
        "python_rng_state": _jsonable_rng(random.getstate()),
        "tokens_trained": run.tokens_trained,
        "history": [m.to_dict() for m in run.history],
        "last_eval": list(run.last_eval) if run.last_eval else None,
        "early_stopping": run.early.state(),
        "stopped_early": run.stopped_early,
        "fingerprint": run.fingerprint,
        "mlflow_run_id": run.mlflow_run_id,
    }
    tensors = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if cuda else [],
    }
    return write_checkpoint(
        target, model=run.model, tokenizer=run.tokenizer, state=state, tensors=tensors
    )


def restore_run(checkpoint: Path, run: Any, data_rng: random.Random) -> None:
    """Load ``checkpoint`` into the run state: weights, optimizer, scheduler, generators,
    data position, history and early-stopping state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from phi_finetune.local.results import StepMetrics

    state = read_state(checkpoint)
    tensors = load_tensors(checkpoint)
    set_peft_model_state_dict(run.model, load_file(checkpoint / "adapter_model.safetensors"))
    run.optimizer.load_state_dict(tensors["optimizer"])
    run.scheduler.load_state_dict(tensors["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    if tensors.get("cuda_rng") and run.hardware.device.startswith("cuda"):
        torch.cuda.set_rng_state_all(tensors["cuda_rng"])
    random.setstate(_rng_state(state["python_rng_state"]))
    data_rng.setstate(_rng_state(state["data_rng_state"]))
    run.step = int(state["step"])
    run.epoch = int(state["position"]["epoch"])
    run.next_group = int(state["position"]["next_group"])
    run.tokens_trained = int(state["tokens_trained"])
    run.history = [StepMetrics(**m) for m in state["history"]]
    last = state.get("last_eval")
    run.last_eval = (int(last[0]), float(last[1])) if last else None
    run.early.restore(state.get("early_stopping", {}))
    run.stopped_early = bool(state.get("stopped_early", False))
    run.mlflow_run_id = state.get("mlflow_run_id")


def _jsonable_rng(state: Any) -> Any:
    """``random.Random.getstate()`` as JSON (tuples become lists)."""
    if state is None:
        return None
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state(value: Any) -> Any:
    version, internal, gauss = value
    return (int(version), tuple(int(x) for x in internal), gauss)
