"""Local backend: tiny test model, chat masks, parameters and the LoRA training loop."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PHI_FINETUNE_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest.importorskip("torch")
pytest.importorskip("peft")

from phi_finetune.errors import LocalBackendError, ParameterError
from phi_finetune.local._chat import encode_conversation
from phi_finetune.local.model_loading import load_model_and_tokenizer
from phi_finetune.local.parameters import resolve_parameters
from phi_finetune.local.results import StepMetrics
from phi_finetune.local.tiny_model import build_tiny_model, is_test_model
from phi_finetune.local.training import LocalTrainer

ANSWER = "Paris is the capital of France."


def make_conversations(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chat records of varied length whose answers are easy to learn."""
    rng = random.Random(seed)
    vocabulary = "the a cat dog sat on mat sun sky blue red quick brown fox lazy"
    words = vocabulary.split()
    records = []
    for _ in range(n):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(2, 25)))
        records.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": ANSWER},
                ]
            }
        )
    return records


@pytest.fixture(scope="module")
def data() -> list[dict[str, Any]]:
    return make_conversations(32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data: list[dict[str, Any]]) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts=data, seed=0)


FAST = {
    "learning_rate": "0.01",
    "per_device_train_batch_size": "8",
    "lora_r": "8",
    "lora_alpha": "16",
    "lora_dropout": "0.0",
    "seed": "7",
    "max_seq_length": "128",
}


# --------------------------------------------------------------------------- tiny model


def test_tiny_model_builds_and_reloads_offline(tiny: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert is_test_model(tiny)
    assert "TEST model" in (tiny / "README.md").read_text(encoding="utf-8")
    model, tokenizer = load_model_and_tokenizer(tiny)
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 500_000
    vocab = tokenizer.get_vocab()
    for token in ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"):
        assert token in vocab
        assert tokenizer.convert_ids_to_tokens(
            tokenizer(token, add_special_tokens=False)["input_ids"]
        ) == [token]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    # Same seed and texts: same weights.
    again = build_tiny_model(tmp_path / "again", texts=make_conversations(32), seed=0)
    a = AutoModelForCausalLM.from_pretrained(again).state_dict()
    b = model.state_dict()
    assert all(bool((a[k] == b[k]).all()) for k in b)
    assert AutoTokenizer.from_pretrained(again).get_vocab() == vocab


def test_assistant_only_mask(tiny: Path) -> None:
    _, tokenizer = load_model_and_tokenizer(tiny)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "the cat sat"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "and the dog?"},
        {"role": "assistant", "content": ANSWER},
    ]
    ids, mask = encode_conversation(tokenizer, messages)
    assert len(ids) == len(mask)
    masked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert masked == "Hi there!<|end|>\n" + ANSWER + "<|end|>\n"
    unmasked = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "the cat sat" in unmasked and "Be brief." in unmasked and "and the dog?" in unmasked
    assert "<|assistant|>" in unmasked and "Hi there" not in unmasked
    # Truncation keeps ids and mask aligned.
    short_ids, short_mask = encode_conversation(tokenizer, messages, max_length=10)
    assert len(short_ids) == len(short_mask) == 10


def test_padded_batch_loss_equals_each_example_alone(
    tiny: Path, data: list[dict[str, Any]]
) -> None:
    # _loss_sum passes no padding mask (right padding + causal attention): a padded batch must
    # score exactly what each example scores on its own, with the mask or without padding.
    import torch

    model, tokenizer = load_model_and_tokenizer(tiny)
    model.eval()
    examples = [encode_conversation(tokenizer, r["messages"]) for r in data[:6]]
    assert len({len(ids) for ids, _ in examples}) > 1  # the batch really is padded
    pad_id = int(tokenizer.pad_token_id)
    with torch.no_grad():
        ids, labels = LocalTrainer._collate(examples, range(6), pad_id, "cpu")
        attention = torch.zeros_like(ids)
        for row, (tokens, _) in enumerate(examples):
            attention[row, : len(tokens)] = 1
        batch_loss, batch_count = LocalTrainer._loss_sum(model, ids, labels)
        alone_loss, alone_count = 0.0, 0
        for index in range(6):
            one = LocalTrainer._collate(examples, [index], pad_id, "cpu")
            loss, count = LocalTrainer._loss_sum(model, one[0], one[1])
            alone_loss += float(loss)
            alone_count += count
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1, :]
        masked_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum"
        )
    assert batch_count == alone_count > 0
    assert float(batch_loss) == pytest.approx(alone_loss, rel=1e-5)
    assert float(batch_loss) == pytest.approx(float(masked_loss), rel=1e-5)


# --------------------------------------------------------------------------- parameters


def test_parameters_resolve_strings_and_report_azure_only() -> None:
    resolved, ignored = resolve_parameters(
        {
            "num_train_epochs": "2",
            "learning_rate": "2e-5",
            "merge_lora_weights": "false",
            "lora_dropout": 0.1,
            "apply_deepspeed": "true",
            "deepspeed_stage": "2",
            "apply_ort": "false",
            "compute_finetune": "gpu-cluster",
            "instance_type_finetune": "Standard_NC24ads_A100_v4",
            "num_nodes_finetune": 1,
            "number_of_gpu_to_use_finetuning": 1,
            "shm_size_finetune": "5g",
            "some_future_flag": 3,
        }
    )
    assert resolved["num_train_epochs"] == 2
    assert resolved["learning_rate"] == pytest.approx(2e-5)
    assert resolved["merge_lora_weights"] is False
    names = {p.name: p for p in ignored}
    assert set(names) == {
        "apply_deepspeed",
        "deepspeed_stage",
        "apply_ort",
        "compute_finetune",
        "instance_type_finetune",
        "num_nodes_finetune",
        "number_of_gpu_to_use_finetuning",
        "shm_size_finetune",
        "some_future_flag",
    }
    assert "DeepSpeed" in names["apply_deepspeed"].reason
    assert names["some_future_flag"].reason == "not a parameter the local backend knows"
    assert names["compute_finetune"].value == "gpu-cluster"


def test_invalid_parameters_list_every_problem() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(
            {"learning_rate": "fast", "lora_r": 0, "lr_scheduler_type": "zigzag", "seed": "1.5"}
        )
    names = {p.name for p in info.value.problems}
    assert names == {"learning_rate", "lora_r", "lr_scheduler_type", "seed"}
    assert "zigzag" in str(info.value)


def test_unreachable_hub_model_gives_offline_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LocalBackendError) as info:
        load_model_and_tokenizer("phi-finetune-tests/no-such-model")
    message = str(info.value)
    assert "no-such-model" in message and "HF_HUB_OFFLINE" in message
    assert "--local-dir" in message


def test_missing_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalBackendError, match="does not exist"):
        load_model_and_tokenizer(tmp_path / "nothing-here")


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_loss_falls_and_is_deterministic(
    tiny: Path, data: list[dict[str, Any]], tmp_path: Path
) -> None:
    params = {**FAST, "max_steps": "12", "apply_deepspeed": "true", "precision": "16"}
    first = LocalTrainer(tiny, output_dir=tmp_path / "a", parameters=params, device="cpu").train(
        data, validation=data[:8]
    )
    second = LocalTrainer(tiny, output_dir=tmp_path / "b", parameters=params, device="cpu").train(
        data, validation=data[:8]
    )
    losses = [m.loss for m in first.history]
    assert len(losses) == first.steps == 12
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3])
    # Deterministic on CPU for a fixed seed.
    assert losses == [m.loss for m in second.history]
    assert first.eval_loss == second.eval_loss and first.eval_loss is not None
    assert first.eval_loss < losses[0]
    # Result contents.
    assert first.tokens_trained == sum(m.tokens for m in first.history) > 0
    assert all(m.tokens_per_s > 0 for m in first.history)
    assert first.device == "cpu" and first.precision == "fp32"
    ignored = {p.name for p in first.ignored}
    assert {"apply_deepspeed", "precision"} <= ignored
    assert first.merged_dir is not None and (first.merged_dir / "config.json").is_file()
    assert (first.merged_dir / "tokenizer.json").is_file()
    assert (first.adapter_dir / "adapter_config.json").is_file()
    assert first.metrics[0].keys() >= {"step", "epoch", "loss", "tokens_per_s"}
    assert first.duration_s > 0


@pytest.mark.slow
def test_checkpoint_per_epoch_and_mlflow_metrics(
    tiny: Path, data: list[dict[str, Any]], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trainer = LocalTrainer(
        tiny,
        output_dir=tmp_path / "out",
        parameters={**FAST, "num_train_epochs": 2, "merge_lora_weights": "false"},
        device="cpu",
        mlflow_tracking_uri=uri,
    )
    result = trainer.train(data)
    assert [p.name for p in result.checkpoints] == ["epoch-1", "epoch-2"]
    for checkpoint in result.checkpoints:
        assert (checkpoint / "adapter_config.json").is_file()
        assert (checkpoint / "trainer_state.json").is_file()
    assert result.steps == 8  # 32 examples / batch 8 = 4 steps per epoch
    assert result.merged_dir is None
    assert not list((tmp_path / "out").rglob("*.tmp"))
    assert result.mlflow_run_id is not None
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(result.mlflow_run_id, "loss")
    assert [m.step for m in history] == list(range(1, 9))
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["lora_r"] == "8"
    assert run.info.status == "FINISHED"
    # artifacts go beside the store, not into ./mlruns of the working folder
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


@pytest.mark.slow
def test_keyboard_interrupt_keeps_last_checkpoint(
    tiny: Path, data: list[dict[str, Any]], tmp_path: Path
) -> None:
    def stop_at_step_6(metrics: StepMetrics) -> None:
        if metrics.step == 6:
            raise KeyboardInterrupt

    trainer = LocalTrainer(
        tiny,
        output_dir=tmp_path / "out",
        parameters={**FAST, "num_train_epochs": 3},
        device="cpu",
        on_step=stop_at_step_6,
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.train(data)
    assert trainer.last_checkpoint == tmp_path / "out" / "checkpoints" / "epoch-1"
    assert (trainer.last_checkpoint / "adapter_config.json").is_file()
    assert not (tmp_path / "out" / "checkpoints" / "epoch-2").exists()
    assert not (tmp_path / "out" / "merged").exists()


def test_no_trainable_conversation_is_a_clear_error(tiny: Path, tmp_path: Path) -> None:
    only_users = [{"messages": [{"role": "user", "content": "hello"}]}]
    trainer = LocalTrainer(tiny, output_dir=tmp_path, parameters=FAST, device="cpu")
    with pytest.raises(LocalBackendError, match="assistant turn"):
        trainer.train(only_users)


def test_bad_jsonl_names_file_and_line(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": []}\nnot json\n', encoding="utf-8")
    trainer = LocalTrainer(tiny, output_dir=tmp_path / "out", parameters=FAST, device="cpu")
    with pytest.raises(LocalBackendError, match=r"train\.jsonl:2"):
        trainer.train(path)
