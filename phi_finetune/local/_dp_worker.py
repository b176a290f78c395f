"""A data parallel worker of the local trainer (``python -m phi_finetune.local._dp_worker SPEC``).

Started by :func:`phi_finetune.local.distributed.train_in_processes`; not for direct use.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from phi_finetune._atomic import atomic_write_json
from phi_finetune.local import distributed
from phi_finetune.local.distributed import World

_RENDEZVOUS_TIMEOUT_S = 600


def _exit_with_parent(parent: int) -> None:
    """Exit when the launcher is gone (a killed launcher leaves no worker behind)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: join the rendezvous, train, worker 0 writes the result."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    rank = int(os.environ["PHI_FINETUNE_DP_RANK"])
    size = int(os.environ["PHI_FINETUNE_DP_SIZE"])
    _exit_with_parent(int(os.environ["PHI_FINETUNE_DP_PARENT"]))
    logging.basicConfig(level=logging.INFO, format=f"[worker {rank}] %(levelname)s %(message)s")
    import torch
    import torch.distributed as dist

    from phi_finetune.local.training import LocalTrainer

    use_nccl = spec["device"] != "cpu" and torch.cuda.is_available()
    dist.init_process_group(
        "nccl" if use_nccl else "gloo",
        init_method=f"tcp://127.0.0.1:{os.environ['PHI_FINETUNE_DP_PORT']}",
        rank=rank,
        world_size=size,
        timeout=timedelta(seconds=_RENDEZVOUS_TIMEOUT_S),
    )
    distributed._active = World(rank=rank, size=size, local_rank=rank)
    try:
        trainer = LocalTrainer(
            spec["model"],
            output_dir=spec["output_dir"],
            parameters=spec["parameters"],
            device=spec["device"],
            mlflow_tracking_uri=spec["mlflow_tracking_uri"],
            mlflow_experiment=spec["mlflow_experiment"],
            mlflow_run_id=spec["mlflow_run_id"],
            lora_target_modules=spec["lora_target_modules"],
        )
        result = trainer.train(spec["train"], validation=spec["validation"], merge=spec["merge"])
        if rank == 0:
            atomic_write_json(spec["result"], result.to_dict())
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
