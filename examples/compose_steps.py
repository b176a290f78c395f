"""The workflow's classes used one by one, without ``FineTuneSession``: your own data, a cluster
that already exists, an endpoint reattached by name, and the endpoint deleted at the end.

Use this when you need a step the facade does not expose, or to plug one step into your own
code. Nothing here is journaled: if the process dies, delete what it created yourself (the
facade's journal, ``phi-finetune teardown``, does that for you).

Run it against a real workspace with ``python compose_steps.py`` (a ``config.json`` from Azure ML
studio in this folder or above, and a GPU cluster named ``gpu-cluster``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.job import FineTuneJob
from phi_finetune.azure.registrar import ModelRegistrar
from phi_finetune.data import UltraChatDataset
from phi_finetune.endpoint import Endpoint

CLUSTER = "gpu-cluster"


def _conversation(question: str, answer: str) -> dict[str, Any]:
    return {
        "prompt": question,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
    }


# Your own chat data, in memory (one list per split; prompt_id is derived from the prompt).
RECORDS = {
    "train_sft": [
        _conversation(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")
        for a in range(1, 9)
        for b in range(1, 4)
    ],
    "test_sft": [_conversation("What is 10 plus 10?", "10 plus 10 is 20.")],
    "test_gen": [_conversation("What is 12 plus 30?", "12 plus 30 is 42.")],
}


def main(
    ml_client: Any,
    registry_client: Any,
    *,
    workdir: str | Path | None = None,
    cluster: str = CLUSTER,
    poll_interval_s: float = 15.0,
) -> str:
    """Prepare and register the data, fine-tune on ``cluster``, register, deploy, score once,
    delete the endpoint; returns the model's reply. Files go under ``workdir`` (default: a new
    temporary folder)."""
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="compose-"))
    # Step 7: validate (strict: any bad row raises, naming split, line and field), write the
    # pipeline's files, register them as versioned data assets (same data -> same version).
    dataset = UltraChatDataset.from_records(RECORDS)
    prepared = dataset.prepare(workdir / "data", split_pc=100, on_invalid="strict")
    print("rows per file:", dict(prepared.counts))
    assets = prepared.register(ml_client, name_prefix="arithmetic").input_paths()

    # Steps 5, 6, 8-11: an existing cluster (never created here), the model and the pipeline
    # component from the registry, every parameter checked before anything is submitted.
    compute = ComputeSelector(ml_client, cluster=cluster, create_if_missing=False)
    job = FineTuneJob(
        ml_client=ml_client,
        registry_client=registry_client,
        model="Phi-4",  # live; the notebook's Phi-3-mini-4k-instruct retired on 2025-08-30
        compute=compute,
        parameters={"num_train_epochs": 1, "learning_rate": 5e-6, "apply_lora": "true"},
        train_data=assets["train_file_path"],
        test_data=assets.get("test_file_path"),
        experiment_name="compose-steps",
    )
    plan = job.plan()
    print(plan.to_table())
    handle = job.begin_submit()
    handle.poll_interval_s = poll_interval_s
    print("job", handle.name, "->", handle.wait())  # raises JobFailedError with the failing step

    # Step 12: register the trained model (a second call for the same job reuses the version).
    model = ModelRegistrar(ml_client).register(handle.name, base_model=plan.model.name)
    print("registered", model.asset_id)

    # Steps 13-14: a new key-auth endpoint with the deployment taking all the traffic.
    deployer = EndpointDeployer(ml_client, poll_interval_s=poll_interval_s)
    endpoint = deployer.deploy(model, instance_type="Standard_NC24ads_A100_v4")
    try:
        # Step 15, on an endpoint that already exists (here the one just made): attach by name.
        existing = Endpoint.from_name(
            ml_client, endpoint.name, deployment_name=endpoint.deployment_name
        )
        reply = existing.invoke([{"role": "user", "content": "What is 2 plus 2?"}]).text
        print("reply:", reply)
    finally:
        deployer.delete(endpoint.name)  # step 16: billing stops, even when scoring failed
    return reply


if __name__ == "__main__":
    from phi_finetune.azure.workspace import Workspace

    workspace = Workspace.from_config()
    main(workspace.ml_client, workspace.registry_client)
