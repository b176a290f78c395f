"""Data parallel local training over several processes on one machine.

``LocalTrainer(..., processes=N)`` starts ``N`` worker processes (``python -m
phi_finetune.local._dp_worker SPEC``) that meet over a ``torch.distributed`` rendezvous on
127.0.0.1 (gloo on CPU, NCCL when each process gets its own GPU). Every worker holds all the
data and builds the same global batches; worker ``r`` trains on every ``N``-th example of each,
and the summed gradients make each optimizer step the one a single process would take with a
batch of ``N x per_device_train_batch_size``. Worker 0 writes the checkpoints, the adapter,
the merged model and MLflow metrics. The launcher waits for all of them, stops the others (by
pid) when one fails, and each worker exits when the launcher is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune._atomic import atomic_write_json
from phi_finetune.errors import LocalBackendError

if TYPE_CHECKING:
    from phi_finetune.local.results import TrainingResult

logger = logging.getLogger(__name__)

__all__ = ["World", "train_in_processes"]

_POLL_S = 0.1
_STOP_GRACE_S = 5.0
_active: World | None = None


@attrs.frozen
class World:
    """This process's place among the data parallel workers (``size == 1``: alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> World:
        """The world a worker joined (:func:`main`), else a world of one."""
        return _active if _active is not None else cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, request: str) -> str:
        """The device of this worker: its own GPU when CUDA is used, else ``request``."""
        if self.size == 1 or request == "cpu":
            return request
        import torch

        if request in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return "cpu" if request == "auto" else request

    def agree(self, flag: bool) -> bool:
        """Worker 0's ``flag`` on every worker (so that all stop at the same step)."""
        if self.size == 1:
            return flag
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.broadcast(tensor, src=0)
        return bool(tensor.item() > 0.5)

    def reduce_gradients(self, optimizer: Any, loss_total: float) -> float:
        """Sum the gradients (and the summed loss) over all workers, in one all-reduce."""
        import torch
        import torch.distributed as dist

        params = [p for group in optimizer.param_groups for p in group["params"]]
        device = params[0].device
        pieces = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ]
        pieces.append(torch.tensor([loss_total], dtype=pieces[0].dtype, device=device))
        flat = torch.cat(pieces)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        return float(flat[offset].item())

    def _collective_device(self) -> Any:
        import torch.distributed as dist

        return f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"


# ---------------------------------------------------------------------------- the launcher


def train_in_processes(
    trainer: Any, train: Any, *, validation: Any = None, merge: bool | None = None
) -> TrainingResult:
    """Run ``trainer.train`` (a ``LocalTrainer``) in ``trainer.processes`` workers (``python -m
    phi_finetune.local._dp_worker``); worker 0's result."""
    work = trainer.output_dir / ".processes"
    work.mkdir(parents=True, exist_ok=True)
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    spec = {
        "model": trainer.model_source,
        "output_dir": str(trainer.output_dir),
        "parameters": trainer.parameters,
        "device": trainer.device_request,
        "mlflow_tracking_uri": trainer.mlflow_tracking_uri,
        "mlflow_experiment": trainer.mlflow_experiment,
        "mlflow_run_id": trainer.mlflow_run_id,
        "lora_target_modules": _targets(trainer.lora_target_modules),
        "train": _data_file(train, work / "train.jsonl"),
        "validation": None if validation is None else _data_file(validation, work / "eval.jsonl"),
        "merge": merge,
        "result": str(result_file),
    }
    spec_file = atomic_write_json(work / "spec.json", spec)
    _check_devices(trainer.device_request, trainer.processes)
    workers = _start_workers(spec_file, trainer.processes, work)
    _wait(workers, work)
    from phi_finetune.local.results import TrainingResult

    result = TrainingResult.from_dict(json.loads(result_file.read_text(encoding="utf-8")))
    # The parameters the launcher ignored are what the user passed (workers got resolved ones).
    result = attrs.evolve(result, ignored=(*trainer.ignored, *result.ignored))
    assert isinstance(result, TrainingResult)
    trainer.last_checkpoint = result.checkpoints[-1] if result.checkpoints else None
    trainer.resumed_from = result.resumed_from
    return result


def _targets(targets: Any) -> Any:
    if targets is None or isinstance(targets, str):
        return targets
    return list(targets)


def _data_file(source: Any, target: Path) -> str:
    """A path as it is; records written to ``target`` as JSONL for the workers."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    from phi_finetune._atomic import atomic_write_text
    from phi_finetune.local.examples import load_conversations

    rows = load_conversations(source if isinstance(source, Iterable) else [source])
    text = "".join(json.dumps({"messages": messages}) + "\n" for messages in rows)
    atomic_write_text(target, text)
    return str(target)


def _check_devices(request: str, processes: int) -> None:
    if request == "cpu":
        return
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < processes:
        raise LocalBackendError(
            f"processes={processes} asks for one GPU per process but this machine has "
            f"{torch.cuda.device_count()}; lower [local] processes or use device='cpu'"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_workers(spec_file: Path, processes: int, work: Path) -> list[subprocess.Popen[bytes]]:
    port = _free_port()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(processes):
            env = {
                **os.environ,
                "PHI_FINETUNE_DP_RANK": str(rank),
                "PHI_FINETUNE_DP_SIZE": str(processes),
                "PHI_FINETUNE_DP_PORT": str(port),
                "PHI_FINETUNE_DP_PARENT": str(os.getpid()),
            }
            if rank:
                env["PHI_FINETUNE_NO_PROGRESS"] = "1"
            log = (work / f"worker-{rank}.log").open("wb")
            with log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "phi_finetune.local._dp_worker", str(spec_file)],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT if rank else None,
                    )
                )
    except BaseException:
        _stop(workers)
        raise
    return workers


def _wait(workers: list[subprocess.Popen[bytes]], work: Path) -> None:
    """Until all exit; the first failure stops the rest and raises with its log's tail."""
    try:
        while True:
            codes = [w.poll() for w in workers]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                _stop(workers)
                rank = failed[0]
                tail = _tail(work / f"worker-{rank}.log")
                raise LocalBackendError(
                    f"data parallel worker {rank} exited with code {codes[rank]}; "
                    f"its log is {work / f'worker-{rank}.log'}:\n{tail}"
                )
            if all(code == 0 for code in codes):
                return
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        _stop(workers)
        raise


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=_STOP_GRACE_S)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
