"""Cost before spend: an **estimate** of the fine-tune compute and of the endpoint per hour.

Fine-tune hours = ``tokens x epochs / (tokens per GPU second x GPUs) / 3600 + overhead``, with
the token count from the data step (``train_tokens``) or counted in the train file (the
documented estimate of :func:`phi_finetune.data.records.count_tokens`), the epochs from the
parameters, and a per-GPU throughput figure by GPU type. Cost = hours x nodes x the node's
price per hour. The endpoint costs ``instance_count x`` the instance type's price per hour
while it exists. Every assumption is printed with the figures.

Prices are per VM size and region, pay-as-you-go Linux, USD. The authoritative source is the
Azure retail prices API (``https://prices.azure.com/api/retail/prices``, filter
``armSkuName``, ``armRegionName``, ``priceType eq 'Consumption'``); it cannot be reached here,
so :data:`PINNED_PRICES` are figures found in a public compilation of that API (see
:data:`PINNED_PRICE_SOURCE`), **not verified** against it. Pass your own table (TOML or JSON,
see :meth:`PriceTable.load`) with ``[cost] price_file`` for figures you trust (your agreement's
prices, another region).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.azure.vm_sizes import known_size
from phi_finetune.errors import ConfigurationError

__all__ = [
    "DEFAULT_OVERHEAD_HOURS",
    "DEFAULT_REGION",
    "PINNED_PRICES",
    "PINNED_PRICE_SOURCE",
    "TOKENS_PER_GPU_SECOND",
    "CostEstimate",
    "Price",
    "PriceTable",
    "count_file_tokens",
    "estimate_cost",
    "tokens_from",
]

#: Region priced when the workspace's is unknown (offline) and ``[cost] region`` is not set.
DEFAULT_REGION = "eastus"
#: Hours added to the training time: model import, preprocessing, evaluation, node start-up.
DEFAULT_OVERHEAD_HOURS = 0.5

PINNED_PRICE_SOURCE = (
    "Azure retail prices API figures (Linux pay-as-you-go, eastus, USD) as compiled in "
    "github.com/datareceipts/data-receipts 109-gpu-pricing/hyperscalers.json (retrieved "
    "2026-11-09, read 2026-12-01); unverified against prices.azure.com"
)

#: Planning figures, not measurements: training tokens one GPU processes per second for a
#: LoRA fine-tune of a 4-14B model with DeepSpeed (sequence packing off). Set
#: ``[cost] tokens_per_gpu_second`` to your own measured figure.
TOKENS_PER_GPU_SECOND: Mapping[str, float] = {
    "H100-80GB": 3000.0,
    "H100-NVL": 2800.0,
    "A100-80GB": 1600.0,
    "A100-40GB": 1400.0,
    "V100": 500.0,
    "T4": 200.0,
}


@attrs.frozen
class Price:
    """The price per hour of one VM of ``size`` in ``region`` (``*``: any region)."""

    size: str
    region: str
    usd_per_hour: float
    source: str
    verified: bool = False


def _pinned(size: str, usd: float) -> Price:
    return Price(size, DEFAULT_REGION, usd, PINNED_PRICE_SOURCE)


#: Pinned prices (lower-case size, region) -> :class:`Price`. ND96isr_H100_v5 and ND96asr_v4
#: are 8 x the compilation's per-GPU figure (12.29, 3.3996). No figure was found for the T4
#: sizes, NDm A100 v4 or NDv2: pass a price file for them.
PINNED_PRICES: Mapping[tuple[str, str], Price] = {
    (p.size.lower(), p.region): p
    for p in (
        _pinned("Standard_NC24ads_A100_v4", 3.673),
        _pinned("Standard_NC48ads_A100_v4", 9.554),
        _pinned("Standard_NC96ads_A100_v4", 19.108),
        _pinned("Standard_NC40ads_H100_v5", 6.98),
        _pinned("Standard_NC80adis_H100_v5", 17.64),
        _pinned("Standard_ND96isr_H100_v5", 98.32),
        _pinned("Standard_ND96asr_v4", 27.1968),
    )
}


@attrs.frozen
class PriceTable:
    """Prices by VM size and region; :meth:`load` reads a user's table, :meth:`pinned` ours."""

    prices: Mapping[tuple[str, str], Price]
    source: str

    @classmethod
    def pinned(cls) -> PriceTable:
        return cls(PINNED_PRICES, PINNED_PRICE_SOURCE)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceTable:
        """A price table from a TOML or JSON file::

            source = "our agreement, 2026-11"      # printed with every figure
            [[prices]]
            size = "Standard_NC24ads_A100_v4"
            region = "eastus"                      # optional: "*" (any region)
            usd_per_hour = 3.1

        (JSON: ``{"source": ..., "prices": [{"size": ..., "usd_per_hour": ...}]}``).
        """
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data: Any = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"{file}: price file not found; fix cost.price_file", key="cost.price_file"
            ) from exc
        except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError too
            raise ConfigurationError(
                f"{file}: not a readable TOML/JSON price table: {exc}",
                source=str(file),
                key="cost.price_file",
            ) from exc
        return cls.from_dict(data, source=str(file))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> PriceTable:
        """From ``{"source": ..., "prices": [{"size", "region", "usd_per_hour"}, ...]}``."""
        rows = data.get("prices") if isinstance(data, Mapping) else None
        if not isinstance(rows, list) or not rows:
            raise ConfigurationError(
                f"{source}: a price table needs a non-empty 'prices' list of "
                "{size, region (optional), usd_per_hour}",
                source=source,
                key="prices",
            )
        label = str(data.get("source") or source)
        prices: dict[tuple[str, str], Price] = {}
        for i, row in enumerate(rows):
            where = f"prices[{i}]"
            if not isinstance(row, Mapping):
                raise ConfigurationError(f"{source}: {where} must be a table", key=where)
            size, usd = row.get("size"), row.get("usd_per_hour")
            if not isinstance(size, str) or not size.strip():
                raise ConfigurationError(
                    f"{source}: {where}.size must be a VM size name such as "
                    "'Standard_NC24ads_A100_v4'",
                    source=source,
                    key=f"{where}.size",
                )
            if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
                raise ConfigurationError(
                    f"{source}: {where}.usd_per_hour must be a number >= 0, got {usd!r}",
                    source=source,
                    key=f"{where}.usd_per_hour",
                )
            region = str(row.get("region") or "*").strip().lower()
            prices[(size.strip().lower(), region)] = Price(
                size.strip(), region, float(usd), label, verified=True
            )
        return cls(prices, label)

    def price(self, size: str, region: str) -> Price | None:
        """The price of ``size`` in ``region`` (an entry for any region ``*`` counts too)."""
        key = size.strip().lower()
        return self.prices.get((key, region.strip().lower())) or self.prices.get((key, "*"))


def count_file_tokens(path: str | os.PathLike[str]) -> int:
    """Tokens of every conversation in a chat JSONL file (``messages`` lists), by the
    documented estimate (characters / 4 + 4 per message)."""
    import orjson

    from phi_finetune.data.records import count_tokens

    total = 0
    with Path(path).open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the data checks report bad rows; the estimate skips them
            messages = row.get("messages") if isinstance(row, dict) else None
            if isinstance(messages, list):
                total += count_tokens([m for m in messages if isinstance(m, dict)])
    return total


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


@attrs.frozen
class CostEstimate:
    """An estimate (never a quote) of the fine-tune compute and the endpoint per hour."""

    region: str
    vm_size: str
    nodes: int
    gpus_per_node: int
    epochs: float
    train_tokens: int | None
    tokens_per_gpu_second: float | None
    overhead_hours: float
    finetune_hours: float | None
    gpu_hours: float | None
    node_usd_per_hour: float | None
    finetune_usd: float | None
    instance_type: str | None
    instance_count: int
    instance_usd_per_hour: float | None
    endpoint_usd_per_hour: float | None
    assumptions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["assumptions"] = list(self.assumptions)
        data["estimate"] = True
        data["currency"] = "USD"
        return data

    def table_rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` rows for the plan table; every assumption follows them."""
        hours = "unknown" if self.finetune_hours is None else f"{self.finetune_hours:.2f} h"
        gpu_hours = "unknown" if self.gpu_hours is None else f"{self.gpu_hours:.2f} GPU-h"
        rows = [
            (
                "cost (estimate)",
                f"fine-tune {_money(self.finetune_usd)} ({self.nodes} node(s) x "
                f"{self.gpus_per_node} GPU(s) x {hours} = {gpu_hours} of {self.vm_size}, "
                f"{_money(self.node_usd_per_hour)}/h per node, {self.region})",
            )
        ]
        if self.instance_type is not None:
            rows.append(
                (
                    "endpoint (estimate)",
                    f"{_money(self.endpoint_usd_per_hour)}/h while it exists "
                    f"({self.instance_count} x {self.instance_type} at "
                    f"{_money(self.instance_usd_per_hour)}/h)",
                )
            )
        rows += [("assumption", a) for a in self.assumptions]
        return rows


def estimate_cost(
    *,
    vm_size: str,
    nodes: int,
    gpus_per_node: int,
    epochs: float,
    train_tokens: int | None,
    token_source: str,
    instance_type: str | None,
    instance_count: int = 1,
    region: str | None = None,
    region_source: str = "",
    prices: PriceTable | None = None,
    tokens_per_gpu_second: float | None = None,
    overhead_hours: float = DEFAULT_OVERHEAD_HOURS,
    gpu_type: str | None = None,
) -> CostEstimate:
    """The estimate for one run; ``prices`` defaults to :meth:`PriceTable.pinned`.

    ``gpu_type`` (for the throughput figure) defaults to the pinned size table's.
    """
    table = prices or PriceTable.pinned()
    where = (region or DEFAULT_REGION).strip().lower()
    assumptions = [
        "an estimate, not a quote: Azure bills per second of node time; storage, network and "
        "taxes are not included",
        f"region {where} ({region_source or 'not known offline; set cost.region'})",
        f"prices: {table.source}",
    ]
    throughput, throughput_note = _throughput(vm_size, gpu_type, tokens_per_gpu_second)
    assumptions.append(throughput_note)
    assumptions.append(f"{epochs:g} epoch(s) (num_train_epochs)")
    assumptions.append(f"+{overhead_hours:g} h for model import, preprocessing and evaluation")
    if train_tokens is None:
        assumptions.append(f"training tokens unknown ({token_source}): hours not estimated")
    else:
        assumptions.append(f"{train_tokens:,} training tokens ({token_source})")

    hours = gpu_hours = None
    gpus = max(nodes, 1) * max(gpus_per_node, 1)
    if train_tokens is not None and throughput is not None:
        train_hours = train_tokens * epochs / (throughput * gpus) / 3600
        hours = train_hours + overhead_hours
        gpu_hours = hours * gpus

    node_price = _price_of(table, vm_size, where, assumptions)
    finetune_usd = None
    if hours is not None and node_price is not None:
        finetune_usd = hours * nodes * node_price

    instance_price = endpoint_price = None
    if instance_type is not None:
        instance_price = _price_of(table, instance_type, where, assumptions)
        if instance_price is not None:
            endpoint_price = instance_price * instance_count
    return CostEstimate(
        region=where,
        vm_size=vm_size,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        epochs=epochs,
        train_tokens=train_tokens,
        tokens_per_gpu_second=throughput,
        overhead_hours=overhead_hours,
        finetune_hours=_round(hours),
        gpu_hours=_round(gpu_hours),
        node_usd_per_hour=node_price,
        finetune_usd=_round(finetune_usd),
        instance_type=instance_type,
        instance_count=instance_count,
        instance_usd_per_hour=instance_price,
        endpoint_usd_per_hour=_round(endpoint_price),
        assumptions=tuple(assumptions),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _throughput(
    vm_size: str, gpu_type: str | None, override: float | None
) -> tuple[float | None, str]:
    if override is not None:
        return override, f"{override:g} training tokens per GPU per second (your figure)"
    info = known_size(vm_size)
    kind = gpu_type or (info.gpu_type if info else None)
    figure = TOKENS_PER_GPU_SECOND.get(kind or "")
    if figure is None:
        return None, (
            f"no throughput figure for the GPUs of {vm_size}; set cost.tokens_per_gpu_second"
        )
    return figure, (
        f"{figure:g} training tokens per {kind} GPU per second (a planning figure, not "
        "measured; set cost.tokens_per_gpu_second)"
    )


def _price_of(table: PriceTable, size: str, region: str, assumptions: list[str]) -> float | None:
    price = table.price(size, region)
    if price is None:
        assumptions.append(
            f"no price for {size} in {region} in the price table; pass one with cost.price_file"
        )
        return None
    return price.usd_per_hour


def tokens_from(
    train_tokens: int | None, files: Iterable[str | os.PathLike[str] | None]
) -> tuple[int | None, str]:
    """The training token count and where it came from: ``train_tokens`` when given, else
    counted in the first local file of ``files`` that exists."""
    if train_tokens is not None:
        return train_tokens, "cost.train_tokens"
    for candidate in files:
        if candidate is None:
            continue
        path = Path(str(candidate))
        if path.is_file():
            return count_file_tokens(path), f"estimated from {path.name} (characters / 4)"
    return None, "no local train file to count; set cost.train_tokens"
