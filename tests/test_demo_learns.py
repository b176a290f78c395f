"""The demo visibly learns: its training loss drops by >= 40% and replies use the demo's words.

Trains the demo's configuration (``phi-finetune demo``: tiny test model, shipped demo data, ~200
LoRA steps) through the session and compares the merged model's sampled replies with the
untrained base model's: the share of reply words that occur in the demo training data must
rise by at least 10 points.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")

import phi_finetune
from phi_finetune.cli.demo import _loss_before_after, demo_config
from phi_finetune.session import FineTuneSession

DEMO = Path(phi_finetune.__file__).parent / "data" / "demo"


def _word_share(model_dir: str | Path, vocabulary: set[str]) -> float:
    """Share of the words of seeded, sampled replies to the demo's test prompts found in
    ``vocabulary``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    words: list[str] = []
    for line in (DEMO / "test_gen.jsonl").read_text(encoding="utf-8").splitlines()[:5]:
        prompt = [json.loads(line)["messages"][0]]
        ids: Any = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        torch.manual_seed(0)
        out = model.generate(ids, max_new_tokens=40, do_sample=True, temperature=0.6, top_p=0.9)
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        words += re.findall(r"[a-z]{2,}", text.lower())
    return sum(w in vocabulary for w in words) / max(1, len(words))


@pytest.mark.slow
def test_demo_training_loss_drops_and_replies_use_demo_words(tmp_path: Path) -> None:
    session = FineTuneSession.from_config(demo_config(tmp_path))
    job = session.fine_tune()
    assert job.training is not None and job.training.steps == 200
    learned = _loss_before_after(job)
    assert learned["drop"] >= 0.4, learned
    vocabulary = set(
        re.findall(r"[a-z]{2,}", (DEMO / "train_sft.jsonl").read_text(encoding="utf-8").lower())
    )
    trained = _word_share(job.training.merged_dir, vocabulary)
    base = _word_share(job.training.base_model, vocabulary)
    # Measured: 0.61 after training, 0.48 for the untrained model (its BPE pieces come from
    # the demo data too, so some random replies already spell short demo words).
    assert trained >= 0.5 and trained > base + 0.1, (trained, base)
