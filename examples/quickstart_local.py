"""The whole workflow on this machine in about 10 lines: demo data, a tiny test model, LoRA
training, an MLflow registry, a loopback endpoint, one scored prompt, teardown.

Run it from any folder: ``python quickstart_local.py``; everything it writes goes under
``./phi-finetune-quickstart`` (and MLflow's ``./mlruns``).
"""

from phi_finetune.config import DataConfig, FinetuneConfig, LocalConfig, RunConfig
from phi_finetune.session import FineTuneSession

config = RunConfig(
    backend="local",
    state_dir="phi-finetune-quickstart/state",
    data=DataConfig(source="demo", split_pc=None, output_dir="phi-finetune-quickstart/data"),
    finetune=FinetuneConfig(parameters={"num_train_epochs": 1, "learning_rate": 1e-2}),
    local=LocalConfig(max_steps=4),
)
result = FineTuneSession.from_config(config).run()  # prepare, plan, train, register, deploy, ...
print(f"run {result.run_id}: model {result.model}, reply {result.reply!r}")
