"""Chat data for fine-tuning: load, validate, sample, split, write and register (step 7).

    from phi_finetune.data import UltraChatDataset

    data = UltraChatDataset.from_files("ultrachat_200k_dataset/")   # or .from_hub(), .demo()
    report = data.validate(mode="report", max_tokens=4096)
    prepared = data.prepare("prepared/", split_pc=5, validation_pc=10, on_invalid="skip")
    inputs = prepared.register(ml_client).inputs()   # train_file_path=Input(uri_file), ...

Only the standard library, ``attrs`` and ``orjson`` are imported here; ``datasets``,
``pandas``, ``pyarrow`` and ``azure.ai.ml`` load inside the functions that need them.
"""

from __future__ import annotations

from phi_finetune.azure.data_assets import RegisteredAsset, RegisteredData, asset_version
from phi_finetune.data.dataset import PreparedData, UltraChatDataset
from phi_finetune.data.records import (
    CHARS_PER_TOKEN,
    HUB_SPLITS,
    MESSAGE_OVERHEAD_TOKENS,
    Tokenizer,
    count_tokens,
    derive_prompt_id,
    estimate_tokens,
)
from phi_finetune.data.sampling import head_rows, in_validation
from phi_finetune.data.scoring_sample import (
    scoring_conversation,
    scoring_request_from_row,
    write_sample_score,
)
from phi_finetune.data.sources import DEFAULT_HUB_DATASET
from phi_finetune.data.stats import DataStats, Distribution, SplitStats
from phi_finetune.data.validation import RULES, Rule, ValidationReport

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_HUB_DATASET",
    "HUB_SPLITS",
    "MESSAGE_OVERHEAD_TOKENS",
    "RULES",
    "DataStats",
    "Distribution",
    "PreparedData",
    "RegisteredAsset",
    "RegisteredData",
    "Rule",
    "SplitStats",
    "Tokenizer",
    "UltraChatDataset",
    "ValidationReport",
    "asset_version",
    "count_tokens",
    "derive_prompt_id",
    "estimate_tokens",
    "head_rows",
    "in_validation",
    "scoring_conversation",
    "scoring_request_from_row",
    "write_sample_score",
]
