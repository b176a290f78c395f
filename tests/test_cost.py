"""Cost before spend: the estimate's arithmetic, price tables, the plan and the CLI (issue 13
item 6)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.azure.cost import (
    PINNED_PRICES,
    PriceTable,
    count_file_tokens,
    estimate_cost,
    tokens_from,
)
from phi_finetune.azure.deployment_spec import DeploymentSpec
from phi_finetune.azure.foundation_model import FoundationModel
from phi_finetune.azure.job import FineTuneJob
from phi_finetune.cli.main import main
from phi_finetune.config import CostConfig, RunConfig
from phi_finetune.errors import ConfigurationError
from phi_finetune.interface import load_pinned_interface

A100 = "Standard_NC24ads_A100_v4"
T4 = "Standard_NC4as_T4_v3"
ND = "Standard_ND96asr_v4"

PRICES_TOML = f"""
source = "test sheet 2026-12"
[[prices]]
size = "{ND}"
region = "westeurope"
usd_per_hour = 10.0
[[prices]]
size = "{T4}"
usd_per_hour = 1.5
"""


def _table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES_TOML, encoding="utf-8")
    return PriceTable.load(path)


def test_arithmetic_with_a_user_price_table(tmp_path: Path) -> None:
    estimate = estimate_cost(
        vm_size=ND,
        nodes=2,
        gpus_per_node=8,
        epochs=2,
        train_tokens=57_600_000,
        token_source="given",
        instance_type=T4,
        instance_count=2,
        region="westeurope",
        prices=_table(tmp_path),
        tokens_per_gpu_second=1000,
        overhead_hours=0.5,
    )
    # 57.6M tokens x 2 epochs / (1000 tokens/s/GPU x 16 GPUs) = 7200 s = 2 h, + 0.5 h
    assert estimate.finetune_hours == 2.5
    assert estimate.gpu_hours == 40.0  # 2 nodes x 8 GPUs x 2.5 h
    assert estimate.node_usd_per_hour == 10.0
    assert estimate.finetune_usd == 50.0  # 2.5 h x 2 nodes x $10
    assert estimate.instance_usd_per_hour == 1.5  # the "*" region entry
    assert estimate.endpoint_usd_per_hour == 3.0  # 2 instances
    text = "\n".join(f"{k} {v}" for k, v in estimate.table_rows())
    assert "$50.00" in text and "$3.00/h" in text and "2 node(s) x 8 GPU(s) x 2.50 h" in text
    assert "test sheet 2026-12" in text and "1000 training tokens per GPU" in text
    assert "57,600,000 training tokens (given)" in text and "2 epoch(s)" in text
    assert "estimate, not a quote" in text
    data = estimate.to_dict()
    assert data["estimate"] is True and data["finetune_usd"] == 50.0
    assert data["assumptions"] == list(estimate.assumptions)


def test_missing_price_or_tokens_leaves_the_figure_unknown_and_says_why() -> None:
    estimate = estimate_cost(
        vm_size=T4,
        nodes=1,
        gpus_per_node=1,
        epochs=1,
        train_tokens=None,
        token_source="no local train file",
        instance_type=None,
    )
    assert estimate.finetune_hours is None and estimate.finetune_usd is None
    assert estimate.node_usd_per_hour is None  # no pinned T4 price
    text = " | ".join(estimate.assumptions)
    assert "hours not estimated" in text and "cost.price_file" in text
    assert "region eastus (not known offline; set cost.region)" in text


def test_pinned_prices_are_dated_and_marked_unverified() -> None:
    price = PINNED_PRICES[(A100.lower(), "eastus")]
    assert price.usd_per_hour == 3.673 and not price.verified
    assert "2026-11-09" in price.source and "unverified" in price.source
    table = PriceTable.pinned()
    assert table.price(A100.upper(), "EastUS") == price
    assert table.price(A100, "westeurope") is None  # pinned for eastus only


def test_json_price_table_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"prices": [{"size": A100, "usd_per_hour": 2}]}), "utf-8")
    table = PriceTable.load(good)
    price = table.price(A100, "anywhere")
    assert price is not None and price.usd_per_hour == 2.0 and price.verified
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prices": [{"size": A100, "usd_per_hour": -1}]}), "utf-8")
    with pytest.raises(ConfigurationError, match=r"prices\[0\].usd_per_hour") as info:
        PriceTable.load(bad)
    assert info.value.key == "prices[0].usd_per_hour"
    with pytest.raises(ConfigurationError, match=r"not found; fix cost\.price_file"):
        PriceTable.load(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[prices]\n", "utf-8")
    with pytest.raises(ConfigurationError, match="not a readable TOML/JSON price table"):
        PriceTable.load(broken)


def test_tokens_are_counted_in_the_train_file(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "a" * 10},
                {"role": "assistant", "content": "b"},
            ]
        },
        {"messages": [{"role": "user", "content": "c" * 8}]},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", "utf-8")
    expected = (math.ceil(11 / 4) + 4 * 2) + (math.ceil(8 / 4) + 4 * 1)
    assert count_file_tokens(path) == expected == 17
    assert tokens_from(None, [None, tmp_path / "nope.jsonl", path]) == (
        17,
        "estimated from train.jsonl (characters / 4)",
    )
    assert tokens_from(5, [path]) == (5, "cost.train_tokens")


def _job(tmp_path: Path, **cost: object) -> FineTuneJob:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES_TOML.replace('region = "westeurope"\n', ""), encoding="utf-8")
    model = FoundationModel(
        name="Phi-4",
        version="8",
        id="azureml://registries/azureml/models/Phi-4/versions/8",
        finetune_allow_list=(ND, A100),
        inference_allow_list=(T4,),
    )
    return FineTuneJob(
        model=model,
        compute=ComputeSelector(None, cluster="gpu", vm_size=ND, nodes=2, max_instances=2),
        component=load_pinned_interface(),
        offline=True,
        parameters={"num_train_epochs": 2},
        deployment=DeploymentSpec(instance_count=2),
        cost=CostConfig(price_file=prices, **cost),  # type: ignore[arg-type]
    )


def test_plan_table_and_json_carry_the_same_numbers(tmp_path: Path) -> None:
    plan = _job(tmp_path, train_tokens=57_600_000, tokens_per_gpu_second=1000).plan()
    assert plan.cost is not None
    data = plan.to_dict()["cost"]
    assert data["finetune_usd"] == 50.0 and data["endpoint_usd_per_hour"] == 3.0
    assert data["instance_type"] == T4 and data["instance_count"] == 2
    table = plan.to_table()
    assert "cost (estimate)" in table and "$50.00" in table
    assert "endpoint (estimate)" in table and "$3.00/h" in table
    for assumption in data["assumptions"]:
        assert assumption in table
    json.dumps(plan.to_dict())


def test_plan_counts_the_local_train_file(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "x" * 40}]}) + "\n")
    job = _job(tmp_path, tokens_per_gpu_second=1000)
    job.local_train_file = train
    plan = job.plan()
    assert plan.cost is not None and plan.cost.train_tokens == 14
    assert "estimated from train.jsonl" in plan.to_table()


def test_cost_can_be_switched_off(tmp_path: Path) -> None:
    plan = _job(tmp_path, enabled=False).plan()
    assert plan.cost is None and plan.to_dict()["cost"] is None
    assert "cost (estimate)" not in plan.to_table()


def test_cost_section_is_checked_with_its_key() -> None:
    with pytest.raises(ConfigurationError, match=r"cost\.tokens_per_gpu_second"):
        RunConfig.from_dict({"cost": {"tokens_per_gpu_second": 0}})
    with pytest.raises(ConfigurationError, match=r"cost\.overhead_hours"):
        RunConfig.from_dict({"cost": {"overhead_hours": -1}})
    config = RunConfig.from_dict({"cost": {"region": "westeurope", "train_tokens": 10}})
    assert config.cost.region == "westeurope" and config.cost.train_tokens == 10


CLI_CONFIG = """
backend = "azure"
[model]
allow_retired = true
[compute]
cluster = "gpu"
vm_size = "Standard_NC24ads_A100_v4"
[finetune.parameters]
num_train_epochs = 3
[cost]
train_tokens = 5760000
"""


def test_cli_plan_json_and_price_file_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "phi-finetune.toml"
    config.write_text(CLI_CONFIG, encoding="utf-8")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"prices": [{"size": A100, "usd_per_hour": 4.0}]}), "utf-8")
    args = ["plan", "--config", str(config), "--offline", "--json", "--price-file", str(prices)]
    assert main([*args, "--tokens-per-gpu-second", "800"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    # 5.76M x 3 epochs / (800 x 1 GPU) = 21600 s = 6 h, + 0.5 h; x $4
    assert cost["finetune_hours"] == 6.5 and cost["finetune_usd"] == 26.0
    assert cost["tokens_per_gpu_second"] == 800 and cost["estimate"] is True
    assert main(["plan", "--config", str(config), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "cost (estimate)" in out and "1600 training tokens per A100-80GB GPU" in out
