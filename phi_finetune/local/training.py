"""LoRA fine-tuning of a causal LM on one machine (the local backend's "fine-tune" step).

:class:`LocalTrainer` (or the one-call :func:`train_lora`) loads any causal LM from a local
folder or a Hugging Face Hub id, adds LoRA adapters and trains them with a plain torch loop:

- parameters are named like the Azure ``chat_completion_pipeline`` inputs and may be strings
  (``"16"``, ``"true"``); Azure-only ones (DeepSpeed, ORT, computes, instance types, ...) and
  unknown ones are reported in :attr:`TrainingResult.ignored`, never silently dropped;
- loss on assistant tokens only (masks computed from the rendered chat format, see
  :func:`phi_finetune.local._chat.encode_conversation`);
- length bucketing: examples are sorted by length inside shuffled mega-batches, so a batch pads
  to similar lengths and no example ever attends to another (no packing);
- CUDA with bf16 autocast when available, else CPU in float32; deterministic for a fixed seed
  on CPU;
- a progress bar with step, loss and tokens/s (:mod:`phi_finetune.progress`), metrics to MLflow
  when a tracking URI is given, an adapter checkpoint per epoch, Ctrl-C stops cleanly and keeps
  the last checkpoint, evaluation loss on the validation data at the end;
- finally the adapter is merged into the base model (``merge_and_unload``) and the merged model
  is saved with its tokenizer, ready for :mod:`phi_finetune.local.registry`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from phi_finetune._atomic import atomic_write_json
from phi_finetune.errors import LocalBackendError, ParameterError, ParameterProblem
from phi_finetune.local._chat import PHI3_CHAT_TEMPLATE, encode_conversation
from phi_finetune.local.registry import ARTIFACT_FOLDER
from phi_finetune.progress import progress_bar
from phi_finetune.scoring import validate_conversation

logger = logging.getLogger(__name__)

__all__ = [
    "AZURE_ONLY_PARAMETERS",
    "LOCAL_PARAMETERS",
    "IgnoredParameter",
    "LocalTrainer",
    "StepMetrics",
    "TrainingResult",
    "load_conversations",
    "load_model_and_tokenizer",
    "resolve_parameters",
    "train_lora",
]

#: Parameters the local trainer uses: name -> (type, default).
LOCAL_PARAMETERS: Mapping[str, tuple[type, Any]] = {
    "num_train_epochs": (int, 1),
    "max_steps": (int, -1),
    "learning_rate": (float, 2e-4),
    "lr_scheduler_type": (str, "linear"),
    "warmup_steps": (int, 0),
    "weight_decay": (float, 0.0),
    "lora_r": (int, 8),
    "lora_alpha": (int, 16),
    "lora_dropout": (float, 0.05),
    "per_device_train_batch_size": (int, 4),
    "per_device_eval_batch_size": (int, 4),
    "gradient_accumulation_steps": (int, 1),
    "max_seq_length": (int, 512),
    "seed": (int, 42),
    "precision": (str, "auto"),
    "logging_steps": (int, 1),
    "merge_lora_weights": (bool, True),
}

#: Pipeline inputs that only mean something on Azure ML (reported as ignored).
AZURE_ONLY_PARAMETERS: Mapping[str, str] = {
    "apply_deepspeed": "DeepSpeed is not used by the local backend",
    "deepspeed_stage": "DeepSpeed is not used by the local backend",
    "ds_config": "DeepSpeed is not used by the local backend",
    "apply_ort": "ONNX Runtime training is not used by the local backend",
    "number_of_gpu_to_use_finetuning": "the local backend uses at most one device",
    "num_nodes_finetune": "the local backend runs on this machine only",
    "shm_size_finetune": "shared memory size applies to Azure ML containers only",
    "apply_lora": "the local backend always trains LoRA adapters",
    "auto_find_batch_size": "the local backend uses the given batch size",
}
_AZURE_ONLY_PREFIXES = ("compute_", "instance_type_")

_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
_PRECISIONS = ("auto", "32", "fp32", "16", "fp16", "bf16")
_PHI3_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_MEGABATCH = 32  # batches per sorting window

Conversation = Sequence[Mapping[str, str]]


@attrs.frozen
class IgnoredParameter:
    """A parameter the local backend did not use, and why."""

    name: str
    value: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "reason": self.reason}


@attrs.frozen
class StepMetrics:
    """Metrics of one optimizer step."""

    step: int
    epoch: float
    loss: float
    tokens_per_s: float
    learning_rate: float = 0.0
    tokens: int = 0
    """Non-pad tokens processed in this step."""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class TrainingResult:
    """What :meth:`LocalTrainer.train` produced."""

    adapter_dir: Path
    """The final LoRA adapter (``adapter_config.json`` + weights) and tokenizer."""
    merged_dir: Path | None
    """The base model with the adapter merged in, plus tokenizer (``None`` when not merged)."""
    checkpoints: tuple[Path, ...]
    """One adapter checkpoint per completed epoch (and one where ``max_steps`` stopped)."""
    history: tuple[StepMetrics, ...]
    eval_loss: float | None
    ignored: tuple[IgnoredParameter, ...]
    parameters: Mapping[str, Any] = attrs.field(converter=dict)
    """The resolved parameters actually used."""
    tokens_trained: int = 0
    """Non-pad tokens processed (all epochs)."""
    steps: int = 0
    duration_s: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    mlflow_run_id: str | None = None
    skipped_examples: int = 0
    """Training examples dropped (no assistant token left after truncation)."""

    @property
    def final_loss(self) -> float | None:
        return self.history[-1].loss if self.history else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """History as ``[{step, epoch, loss, tokens_per_s, ...}, ...]``."""
        return [m.to_dict() for m in self.history]


# --------------------------------------------------------------------------- parameters


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError("expected true or false")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            number = float(value.strip())
            if number.is_integer():
                return int(number)
        raise ValueError("expected an integer")
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return float(value.strip() if isinstance(value, str) else value)
    return str(value).strip()


def resolve_parameters(
    parameters: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], tuple[IgnoredParameter, ...]]:
    """Resolve Azure-named fine-tune parameters for the local trainer.

    Returns the values used (defaults filled in, strings converted) and the ignored ones.
    Raises :class:`~phi_finetune.errors.ParameterError` listing every invalid value.
    """
    resolved: dict[str, Any] = {name: default for name, (_, default) in LOCAL_PARAMETERS.items()}
    ignored: list[IgnoredParameter] = []
    problems: list[ParameterProblem] = []
    for name, value in (parameters or {}).items():
        spec = LOCAL_PARAMETERS.get(name)
        if spec is None:
            if name in AZURE_ONLY_PARAMETERS:
                reason = AZURE_ONLY_PARAMETERS[name]
            elif name.startswith(_AZURE_ONLY_PREFIXES):
                reason = "Azure ML compute settings do not apply to the local backend"
            else:
                reason = "not a parameter the local backend knows"
            ignored.append(IgnoredParameter(name, value, reason))
            continue
        if value is None:
            continue
        try:
            resolved[name] = _coerce(name, value, spec[0])
        except (TypeError, ValueError):
            problems.append(ParameterProblem(name, value, f"expected {spec[0].__name__}"))
    problems.extend(_range_problems(resolved))
    if problems:
        raise ParameterError(
            "invalid fine-tuning parameters for the local backend", problems=problems
        )
    return resolved, tuple(ignored)


def _range_problems(p: Mapping[str, Any]) -> list[ParameterProblem]:
    checks: list[tuple[str, bool, str, str]] = [
        ("num_train_epochs", p["num_train_epochs"] >= 1, "must be >= 1", ">= 1"),
        ("max_steps", p["max_steps"] == -1 or p["max_steps"] >= 1, "must be -1 or >= 1", ""),
        ("learning_rate", p["learning_rate"] > 0, "must be > 0", "> 0"),
        ("warmup_steps", p["warmup_steps"] >= 0, "must be >= 0", ">= 0"),
        ("weight_decay", p["weight_decay"] >= 0, "must be >= 0", ">= 0"),
        ("lora_r", p["lora_r"] >= 1, "must be >= 1", ">= 1"),
        ("lora_alpha", p["lora_alpha"] >= 1, "must be >= 1", ">= 1"),
        ("lora_dropout", 0 <= p["lora_dropout"] < 1, "must be in [0, 1)", "[0, 1)"),
        ("per_device_train_batch_size", p["per_device_train_batch_size"] >= 1, "must be >= 1", ""),
        ("per_device_eval_batch_size", p["per_device_eval_batch_size"] >= 1, "must be >= 1", ""),
        ("gradient_accumulation_steps", p["gradient_accumulation_steps"] >= 1, "must be >= 1", ""),
        ("max_seq_length", p["max_seq_length"] == -1 or p["max_seq_length"] >= 8, "too small", ""),
        ("logging_steps", p["logging_steps"] >= 1, "must be >= 1", ">= 1"),
        (
            "lr_scheduler_type",
            p["lr_scheduler_type"] in _SCHEDULERS,
            "unknown scheduler",
            ", ".join(_SCHEDULERS),
        ),
        (
            "precision",
            str(p["precision"]) in _PRECISIONS,
            "unknown precision",
            ", ".join(_PRECISIONS),
        ),
    ]
    return [ParameterProblem(n, p[n], msg, allowed) for n, ok, msg, allowed in checks if not ok]


# --------------------------------------------------------------------------- data


def load_conversations(
    source: str | os.PathLike[str] | Iterable[Any],
) -> list[list[dict[str, str]]]:
    """Conversations from a JSONL file (ultrachat ``{"messages": [...]}`` records) or objects.

    Items may be ``{"messages": [...]}`` records or message lists. Raises
    :class:`~phi_finetune.errors.LocalBackendError` naming file:line for unreadable records.
    """
    records: list[tuple[str, Any]] = []
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise LocalBackendError(f"cannot read training data {path}: {exc.strerror}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{number}", json.loads(line)))
            except ValueError as exc:
                raise LocalBackendError(
                    f"{path}:{number}: not a JSON line; each line must be one "
                    '{"messages": [...]} record'
                ) from exc
    else:
        records = [(f"<records>[{i}]", item) for i, item in enumerate(source)]
    conversations: list[list[dict[str, str]]] = []
    for where, record in records:
        messages = record.get("messages") if isinstance(record, Mapping) else record
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise LocalBackendError(
                f"{where}: expected a {{'messages': [...]}} record or a list of messages"
            )
        conversations.append(
            [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        )
    return conversations


def _usable(conversation: Conversation) -> bool:
    problems = [
        p for p in validate_conversation(list(conversation)) if "must end with a user turn" not in p
    ]
    return not problems and any(m.get("role") == "assistant" for m in conversation)


# --------------------------------------------------------------------------- model loading


def load_model_and_tokenizer(
    model: str | os.PathLike[str], *, device: str = "cpu", dtype: Any = None
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a Hugging Face Hub id.

    Raises :class:`~phi_finetune.errors.LocalBackendError` with an offline hint when the model
    is neither a local folder nor reachable on the Hub.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LocalBackendError(
            "the local backend needs torch, transformers and peft: "
            "pip install 'phi-finetune[local]'"
        ) from exc
    name = os.fspath(model)
    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and (local.exists() or name.startswith((".", "/", "~"))):
        raise LocalBackendError(
            f"model folder {local} does not exist or is not a folder with config.json; pass a "
            "folder saved with save_pretrained or a Hugging Face Hub id such as "
            "'microsoft/Phi-3-mini-4k-instruct'"
        )
    source = str(local) if is_local else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        loaded: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32)
    except Exception as exc:  # a library boundary: any loading failure becomes one clear error
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if is_local:
            raise LocalBackendError(
                f"cannot load the model in {local}: {first}. The folder must hold a causal LM "
                "and its tokenizer saved with save_pretrained."
            ) from exc
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise LocalBackendError(
            f"cannot load model {name!r}: it is not a local folder and the Hugging Face Hub "
            f"could not provide it ({first}). "
            + (
                "HF_HUB_OFFLINE is set, so only the local Hub cache was searched. "
                if offline
                else "If this machine cannot reach huggingface.co, "
            )
            + f"download it where you can (huggingface-cli download {name} --local-dir DIR), "
            "copy DIR here and pass that folder instead; set HF_HUB_OFFLINE=1 to use only "
            "the local cache."
        ) from exc
    if getattr(tokenizer, "chat_template", None) is None:
        logger.warning("tokenizer of %s has no chat template; using the Phi-3 chat format", name)
        tokenizer.chat_template = PHI3_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded.to(device)
    return loaded, tokenizer


# --------------------------------------------------------------------------- trainer


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LocalBackendError(f"device {device!r} was asked for but CUDA is not available")
    return device


class LocalTrainer:
    """Train LoRA adapters on a causal LM with the local backend.

    ``model`` is a local folder or a Hugging Face Hub id. ``parameters`` uses the Azure
    pipeline names (see :data:`LOCAL_PARAMETERS`); invalid values raise
    :class:`~phi_finetune.errors.ParameterError` here, before anything is loaded.
    ``on_step`` is called after every optimizer step (raising ``KeyboardInterrupt`` from it
    stops training like Ctrl-C).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        output_dir: str | os.PathLike[str],
        parameters: Mapping[str, Any] | None = None,
        device: str = "auto",
        mlflow_tracking_uri: str | None = None,
        mlflow_experiment: str = "phi-finetune-local",
        mlflow_run_id: str | None = None,
        lora_target_modules: Sequence[str] | str | None = None,
        on_step: Callable[[StepMetrics], None] | None = None,
    ) -> None:
        self.model_source = os.fspath(model)
        self.output_dir = Path(output_dir)
        self.parameters, self.ignored = resolve_parameters(parameters)
        self.device_request = device
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.mlflow_experiment = mlflow_experiment
        self.mlflow_run_id = mlflow_run_id
        self.lora_target_modules = lora_target_modules
        self.on_step = on_step
        self.last_checkpoint: Path | None = None
        self.model: Any = None
        """After :meth:`train`: the merged model (or the PEFT model when not merged)."""
        self.tokenizer: Any = None

    def __repr__(self) -> str:
        return f"LocalTrainer(model={self.model_source!r}, output_dir={str(self.output_dir)!r})"

    # ----------------------------------------------------------------- helpers

    def _encode(
        self, tokenizer: Any, conversations: Sequence[Conversation], max_len: int
    ) -> tuple[list[tuple[list[int], list[bool]]], int]:
        examples: list[tuple[list[int], list[bool]]] = []
        skipped = 0
        for conversation in conversations:
            if not _usable(conversation):
                skipped += 1
                continue
            ids, mask = encode_conversation(tokenizer, conversation, max_length=max_len)
            # The first token never gets a loss (nothing predicts it).
            if not any(mask[1:]):
                skipped += 1
                continue
            examples.append((ids, mask))
        return examples, skipped

    @staticmethod
    def _batches(
        examples: Sequence[tuple[list[int], list[bool]]],
        batch_size: int,
        rng: random.Random | None,
    ) -> list[list[int]]:
        """Index batches of similar length; shuffled mega-batches when ``rng`` is given."""
        order = list(range(len(examples)))
        if rng is None:
            order.sort(key=lambda i: len(examples[i][0]))
            return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        rng.shuffle(order)
        window = batch_size * _MEGABATCH
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: len(examples[i][0]))
            batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
        rng.shuffle(batches)
        return batches

    @staticmethod
    def _collate(
        examples: Sequence[tuple[list[int], list[bool]]],
        batch: Sequence[int],
        pad_id: int,
        device: str,
    ) -> tuple[Any, Any]:
        """``(ids, labels)`` of a batch, right-padded to its longest example (no mask needed:
        see :meth:`_loss_sum`)."""
        import torch

        width = max(len(examples[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, index in enumerate(batch):
            tokens, mask = examples[index]
            n = len(tokens)
            ids[row, :n] = torch.tensor(tokens, dtype=torch.long)
            labels[row, :n] = torch.where(
                torch.tensor(mask), torch.tensor(tokens, dtype=torch.long), torch.tensor(-100)
            )
        return ids.to(device), labels.to(device)

    @staticmethod
    def _loss_sum(model: Any, ids: Any, labels: Any) -> tuple[Any, int]:
        """Summed next-token loss over assistant tokens, and how many there were.

        The LM head runs only on the positions that predict an assistant token (not on the
        prompt or padding): with real vocabularies (32k+) that is most of the step's compute
        and memory. Models without a separable decoder / LM head get the full logits.

        No padding mask is passed: batches are right-padded (:meth:`_collate`), so under the
        causal mask no real token attends to a pad, position ids are ``0..n-1`` either way and
        pad positions carry no label. The mask would change nothing that is scored; without it
        attention runs the plain causal kernel instead of building a (batch, 1, n, n) mask.
        """
        import torch

        shift_labels = labels[:, 1:]
        wanted = shift_labels != -100
        count = int(wanted.sum().item())
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder = getattr(causal_lm, "model", None)
        head = causal_lm.get_output_embeddings() if decoder is not None else None
        if decoder is not None and head is not None:
            hidden = decoder(input_ids=ids).last_hidden_state
            picked = hidden[:, :-1, :][wanted]
            logits = head(picked).float()
            loss = torch.nn.functional.cross_entropy(logits, shift_labels[wanted], reduction="sum")
            return loss, count
        full = model(input_ids=ids).logits[:, :-1, :].float()
        loss = torch.nn.functional.cross_entropy(
            full.reshape(-1, full.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        return loss, count

    def _save_adapter(
        self, model: Any, tokenizer: Any, target: Path, state: Mapping[str, Any]
    ) -> Path:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "trainer_state.json", dict(state))
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
        return target

    def evaluate(
        self,
        model: Any,
        examples: Sequence[tuple[list[int], list[bool]]],
        pad_id: int,
        device: str,
        autocast: Any,
    ) -> float | None:
        """Mean loss per assistant token over ``examples`` (``None`` when there are none)."""
        import torch

        if not examples:
            return None
        was_training = model.training
        model.eval()
        total = 0.0
        count = 0
        with torch.no_grad():
            for batch in self._batches(
                examples, self.parameters["per_device_eval_batch_size"], None
            ):
                ids, labels = self._collate(examples, batch, pad_id, device)
                with autocast():
                    loss, n = self._loss_sum(model, ids, labels)
                total += float(loss.item())
                count += n
        model.train(was_training)
        return total / count if count else None

    # ----------------------------------------------------------------- train

    def train(
        self,
        train: str | os.PathLike[str] | Iterable[Any],
        *,
        validation: str | os.PathLike[str] | Iterable[Any] | None = None,
        merge: bool | None = None,
    ) -> TrainingResult:
        """Train on ``train`` (JSONL path or records), evaluate on ``validation``, merge, save.

        Raises :class:`~phi_finetune.errors.LocalBackendError` for unusable data or models;
        re-raises ``KeyboardInterrupt`` after stopping cleanly (the last epoch checkpoint,
        if any, stays in ``output_dir/checkpoints`` and in :attr:`last_checkpoint`).
        """
        import contextlib

        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import get_scheduler

        p = self.parameters
        started = time.perf_counter()
        seed = int(p["seed"])
        random.seed(seed)
        torch.manual_seed(seed)
        device = _pick_device(self.device_request)
        ignored = list(self.ignored)
        use_bf16 = False
        precision = "fp32"
        if device.startswith("cuda"):
            torch.cuda.manual_seed_all(seed)
            if (
                str(p["precision"]) in ("auto", "16", "fp16", "bf16")
                and torch.cuda.is_bf16_supported()
            ):
                use_bf16, precision = True, "bf16"
        elif str(p["precision"]) in ("16", "fp16", "bf16"):
            ignored.append(
                IgnoredParameter("precision", p["precision"], "CPU training runs in float32")
            )

        train_conversations = load_conversations(train)
        eval_conversations = load_conversations(validation) if validation is not None else []
        model, tokenizer = load_model_and_tokenizer(
            self.model_source, device=device, dtype=torch.bfloat16 if use_bf16 else torch.float32
        )
        max_len = int(p["max_seq_length"])
        if max_len == -1:
            max_len = min(int(getattr(tokenizer, "model_max_length", 2048) or 2048), 4096)
        examples, skipped = self._encode(tokenizer, train_conversations, max_len)
        if not examples:
            raise LocalBackendError(
                f"none of the {len(train_conversations)} training conversations has an assistant "
                f"turn left within max_seq_length={max_len}; check the data or raise max_seq_length"
            )
        if skipped:
            logger.warning("skipped %d training conversations without assistant tokens", skipped)
        eval_examples, _ = self._encode(tokenizer, eval_conversations, max_len)

        torch.manual_seed(seed)
        targets: Any = self.lora_target_modules
        if targets is None:
            model_type = getattr(model.config, "model_type", "")
            targets = list(_PHI3_TARGETS) if model_type == "phi3" else "all-linear"
        lora = LoraConfig(
            r=int(p["lora_r"]),
            lora_alpha=int(p["lora_alpha"]),
            lora_dropout=float(p["lora_dropout"]),
            target_modules=targets if isinstance(targets, str) else list(targets),
            task_type="CAUSAL_LM",
        )
        peft_model: Any = get_peft_model(model, lora)
        peft_model.train()
        trainable = [q for q in peft_model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=float(p["learning_rate"]), weight_decay=float(p["weight_decay"])
        )
        batch_size = int(p["per_device_train_batch_size"])
        accumulation = int(p["gradient_accumulation_steps"])
        batches_per_epoch = math.ceil(len(examples) / batch_size)
        steps_per_epoch = max(1, math.ceil(batches_per_epoch / accumulation))
        max_steps = int(p["max_steps"])
        epochs = int(p["num_train_epochs"])
        if max_steps > 0:
            epochs = math.ceil(max_steps / steps_per_epoch)
            total_steps = max_steps
        else:
            total_steps = steps_per_epoch * epochs
        scheduler = get_scheduler(
            str(p["lr_scheduler_type"]),
            optimizer=optimizer,
            num_warmup_steps=int(p["warmup_steps"]),
            num_training_steps=total_steps,
        )
        pad_id = int(tokenizer.pad_token_id)

        def autocast() -> Any:
            if use_bf16:
                return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
            return contextlib.nullcontext()

        tracker = _MlflowTracker.start(
            self.mlflow_tracking_uri, self.mlflow_experiment, self.mlflow_run_id
        )
        tracker.log_params(
            {**p, "model": self.model_source, "device": device, "precision_used": precision}
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        checkpoints_dir = self.output_dir / "checkpoints"
        checkpoints: list[Path] = []
        history: list[StepMetrics] = []
        tokens_trained = 0
        step = 0
        rng = random.Random(seed)
        bar = progress_bar(desc="fine-tuning (local)", total=total_steps, unit="step")
        status = "FINISHED"
        try:
            for epoch in range(epochs):
                batches = self._batches(examples, batch_size, rng)
                groups = [
                    batches[k : k + accumulation] for k in range(0, len(batches), accumulation)
                ]
                for index, group in enumerate(groups):
                    if step >= total_steps:
                        break
                    t0 = time.perf_counter()
                    collated = [self._collate(examples, b, pad_id, device) for b in group]
                    n_targets = sum(int((lab[:, 1:] != -100).sum().item()) for _, lab in collated)
                    n_tokens = sum(len(examples[i][0]) for b in group for i in b)
                    loss_total = 0.0
                    for ids, labels in collated:
                        with autocast():
                            loss, _ = self._loss_sum(peft_model, ids, labels)
                        (loss / max(n_targets, 1)).backward()
                        loss_total += float(loss.item())
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    elapsed = time.perf_counter() - t0
                    step += 1
                    tokens_trained += n_tokens
                    metrics = StepMetrics(
                        step=step,
                        epoch=round(epoch + (index + 1) / len(groups), 4),
                        loss=loss_total / max(n_targets, 1),
                        tokens_per_s=n_tokens / elapsed if elapsed > 0 else 0.0,
                        learning_rate=float(scheduler.get_last_lr()[0]),
                        tokens=n_tokens,
                    )
                    history.append(metrics)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{metrics.loss:.4f}",
                        tok_s=f"{metrics.tokens_per_s:,.0f}",
                        refresh=False,
                    )
                    if step % int(p["logging_steps"]) == 0 or step == total_steps:
                        tracker.log_step(metrics)
                    if self.on_step is not None:
                        self.on_step(metrics)
                # A checkpoint per epoch, including the partial one where max_steps stopped.
                state = {"epoch": epoch + 1, "step": step, "loss": history[-1].loss}
                target = checkpoints_dir / f"epoch-{epoch + 1}"
                checkpoints.append(self._save_adapter(peft_model, tokenizer, target, state))
                self.last_checkpoint = target
                if step >= total_steps:
                    break
        except KeyboardInterrupt:
            status = "KILLED"
            logger.warning(
                "training interrupted at step %d; last checkpoint: %s", step, self.last_checkpoint
            )
            raise
        except Exception:
            status = "FAILED"
            raise
        finally:
            bar.close()
            if status != "FINISHED":
                tracker.finish(status)

        eval_loss = self.evaluate(peft_model, eval_examples, pad_id, device, autocast)
        adapter_dir = self._save_adapter(
            peft_model,
            tokenizer,
            self.output_dir / "adapter",
            {"step": step, "eval_loss": eval_loss},
        )
        merged_dir: Path | None = None
        do_merge = bool(p["merge_lora_weights"]) if merge is None else merge
        if do_merge:
            merged = peft_model.merge_and_unload()
            merged.eval()
            merged_dir = self.output_dir / "merged"
            tmp = merged_dir.with_name("merged.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if merged_dir.exists():
                shutil.rmtree(merged_dir)
            tmp.replace(merged_dir)
            self.model = merged
        else:
            peft_model.eval()
            self.model = peft_model
        self.tokenizer = tokenizer
        duration = time.perf_counter() - started
        if eval_loss is not None:
            tracker.log_metric("eval_loss", eval_loss, step)
        tracker.log_metric("train_tokens", float(tokens_trained), step)
        tracker.finish("FINISHED")
        return TrainingResult(
            adapter_dir=adapter_dir,
            merged_dir=merged_dir,
            checkpoints=tuple(checkpoints),
            history=tuple(history),
            eval_loss=eval_loss,
            ignored=tuple(ignored),
            parameters=p,
            tokens_trained=tokens_trained,
            steps=step,
            duration_s=duration,
            device=device,
            precision=precision,
            mlflow_run_id=tracker.run_id,
            skipped_examples=skipped,
        )


def _artifact_location_beside(uri: str) -> str | None:
    """``<folder of the SQLite file>/mlartifacts`` for a ``sqlite:///`` store, else ``None``.

    Without it MLflow puts a SQLite store's artifacts in ``./mlruns`` of whatever folder the
    process runs in; this is the layout :class:`~phi_finetune.local.registry.LocalRegistry` uses.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / ARTIFACT_FOLDER).as_uri()


class _MlflowTracker:
    """Metrics to an MLflow run through ``MlflowClient`` (no global mlflow state); or nothing."""

    def __init__(self, client: Any, run_id: str | None, owns_run: bool) -> None:
        self.client = client
        self.run_id = run_id
        self.owns_run = owns_run
        self._pending: list[Any] = []
        self._finished = False

    @classmethod
    def start(cls, uri: str | None, experiment: str, run_id: str | None) -> _MlflowTracker:
        if uri is None:
            return cls(None, None, False)
        from phi_finetune.local._chat import no_mlflow_telemetry

        no_mlflow_telemetry()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            return cls(client, run_id, False)
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(
                experiment, artifact_location=_artifact_location_beside(uri)
            )
        )
        run = client.create_run(experiment_id, tags={"mlflow.runName": "local-lora"})
        return cls(client, run.info.run_id, True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in sorted(params.items())]  # type: ignore[no-untyped-call]
        self.client.log_batch(self.run_id, params=items)

    def log_step(self, m: StepMetrics) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in (
            ("loss", m.loss),
            ("tokens_per_s", m.tokens_per_s),
            ("learning_rate", m.learning_rate),
            ("epoch", m.epoch),
        ):
            self._pending.append(Metric(key, float(value), now, m.step))
        if len(self._pending) >= 200:
            self.flush()

    def log_metric(self, key: str, value: float, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        self._pending.append(Metric(key, float(value), int(time.time() * 1000), step))

    def flush(self) -> None:
        if self.client is None or self.run_id is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        self.client.log_batch(self.run_id, metrics=pending)

    def finish(self, status: str) -> None:
        if self.client is None or self._finished:
            return
        self._finished = True
        try:
            self.flush()
        finally:
            if self.owns_run and self.run_id is not None:
                self.client.set_terminated(self.run_id, status=status)


def train_lora(
    model: str | os.PathLike[str],
    train: str | os.PathLike[str] | Iterable[Any],
    *,
    output_dir: str | os.PathLike[str],
    validation: str | os.PathLike[str] | Iterable[Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    device: str = "auto",
    mlflow_tracking_uri: str | None = None,
    mlflow_run_id: str | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> TrainingResult:
    """One call: :class:`LocalTrainer` ``(...).train(train, validation=validation)``."""
    trainer = LocalTrainer(
        model,
        output_dir=output_dir,
        parameters=parameters,
        device=device,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_run_id=mlflow_run_id,
        on_step=on_step,
    )
    return trainer.train(train, validation=validation)
