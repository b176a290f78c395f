"""The reference chat-completion notebook (Phi-3 + UltraChat on Azure ML) through the facade.

Usage: ``python finetune_phi3_ultrachat.py [phi-finetune.toml]``. Every step is journaled under
``state_dir``: after a crash, ``phi-finetune resume RUN_ID``; to stop billing,
``phi-finetune teardown RUN_ID``.
"""

import sys
from typing import Any

from phi_finetune.session import FineTuneSession, RunResult


def main(
    config_path: str = "examples/phi-finetune.toml", *, workspace: Any = None, backend: Any = None
) -> RunResult:
    session = FineTuneSession.from_config(config_path, workspace=workspace, backend=backend)
    print(f"run {session.run_id} (journal: {session.run_dir})")
    data = session.prepare_data()  # step 7: sampled, validated, registered as data assets
    print("rows per file:", dict(data.counts))
    plan = session.plan()  # steps 5, 6, 8, 9: model, compute, quota, every parameter checked
    print(plan)  # the plan table; plan.model.version, plan.component_version are pinned
    result = session.run()  # 10-16: submit, wait, register, deploy, score, delete the endpoint
    print(f"job {result.job_name} -> model {result.model} -> endpoint {result.endpoint_name}")
    print("reply:", result.reply)
    return result


if __name__ == "__main__":
    main(*sys.argv[1:2])
