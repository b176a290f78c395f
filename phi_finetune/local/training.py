"""LoRA fine-tuning of a causal LM on one machine (the local backend's "fine-tune" step).

:class:`LocalTrainer` (or the one-call :func:`train_lora`) loads any causal LM from a local
folder or a Hugging Face Hub id, adds LoRA adapters and trains them with a plain torch loop.
The steps live in their own modules:

- :mod:`~phi_finetune.local.parameters`: Azure-named parameters, which may be strings
  (``"16"``, ``"true"``); Azure-only and unknown ones are reported in
  :attr:`TrainingResult.ignored`, never silently dropped;
- :mod:`~phi_finetune.local.examples`: JSONL conversations, assistant-only loss masks and
  length bucketing (no packing);
- :mod:`~phi_finetune.local.model_loading`: base model and tokenizer, LoRA adapters, CUDA with
  bf16 autocast when available, else CPU in float32 (deterministic for a fixed seed on CPU);
- :mod:`~phi_finetune.local.tracking`: parameters and metrics to MLflow when a tracking URI is
  given.

This module is the loop: a progress bar with step, loss and tokens/s
(:mod:`phi_finetune.progress`), an adapter checkpoint per epoch, Ctrl-C stops cleanly and keeps
the last checkpoint, evaluation loss on the validation data at the end; finally the adapter is
merged into the base model (``merge_and_unload``) and the merged model is saved with its
tokenizer, ready for :mod:`phi_finetune.local.registry`.
"""

from __future__ import annotations

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
from phi_finetune.errors import LocalBackendError
from phi_finetune.local._layout import DEFAULT_EXPERIMENT
from phi_finetune.local.examples import (
    Conversation,
    Example,
    encode_examples,
    length_batches,
    load_conversations,
)
from phi_finetune.local.model_loading import Hardware, add_lora, load_model_and_tokenizer
from phi_finetune.local.parameters import (
    AZURE_ONLY_PARAMETERS,
    LOCAL_PARAMETERS,
    IgnoredParameter,
    resolve_parameters,
)
from phi_finetune.local.results import StepMetrics, TrainingResult
from phi_finetune.local.tracking import MlflowTracker
from phi_finetune.progress import progress_bar

logger = logging.getLogger(__name__)

# Only LocalTrainer and train_lora are defined here; the other names were defined here in
# 0.1.0 and are re-exported from the modules they moved to.
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

Source = str | os.PathLike[str] | Iterable[Any]
"""Training or validation data: a JSONL path or records (see :func:`load_conversations`)."""


@attrs.define
class _Run:
    """The state the steps of one :meth:`LocalTrainer.train` call share."""

    model: Any
    """The PEFT model being trained."""
    tokenizer: Any
    examples: list[Example]
    hardware: Hardware
    optimizer: Any
    scheduler: Any
    epochs: int
    total_steps: int
    step: int = 0
    tokens_trained: int = 0
    history: list[StepMetrics] = attrs.Factory(list)
    checkpoints: list[Path] = attrs.Factory(list)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


class LocalTrainer:
    """Train LoRA adapters on a causal LM with the local backend.

    ``model`` is a local folder or a Hugging Face Hub id. ``parameters`` uses the Azure
    pipeline names (see :data:`~phi_finetune.local.parameters.LOCAL_PARAMETERS`); invalid
    values raise :class:`~phi_finetune.errors.ParameterError` here, before anything is loaded.
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
        mlflow_experiment: str = DEFAULT_EXPERIMENT,
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

    # ----------------------------------------------------------------- train

    def train(
        self,
        train: Source,
        *,
        validation: Source | None = None,
        merge: bool | None = None,
    ) -> TrainingResult:
        """Train on ``train`` (JSONL path or records), evaluate on ``validation``, merge, save.

        Raises :class:`~phi_finetune.errors.LocalBackendError` for unusable data or models;
        re-raises ``KeyboardInterrupt`` after stopping cleanly (the last epoch checkpoint,
        if any, stays in ``output_dir/checkpoints`` and in :attr:`last_checkpoint`).
        """
        import torch

        p = self.parameters
        started = time.perf_counter()
        seed = int(p["seed"])
        # 1. Seeds, device and precision.
        random.seed(seed)
        torch.manual_seed(seed)
        hardware = Hardware.choose(self.device_request, str(p["precision"]), seed)
        ignored = self.ignored if hardware.ignored is None else (*self.ignored, hardware.ignored)
        # 2. Data (read first: bad records fail before the model loads), model and examples.
        train_conversations = load_conversations(train)
        eval_conversations = load_conversations(validation) if validation is not None else []
        model, tokenizer = load_model_and_tokenizer(
            self.model_source, device=hardware.device, dtype=hardware.dtype
        )
        max_len = self._max_length(tokenizer)
        examples, skipped = self._training_examples(tokenizer, train_conversations, max_len)
        eval_examples, _ = encode_examples(tokenizer, eval_conversations, max_len)
        # 3. LoRA adapters, optimizer and schedule; reseeded so that the adapters' initial
        # weights do not depend on what loading the model drew from the generator.
        torch.manual_seed(seed)
        peft_model = add_lora(model, p, self.lora_target_modules)
        run = self._start_run(peft_model, tokenizer, examples, hardware)
        # 4. Tracking.
        tracker = MlflowTracker.start(
            self.mlflow_tracking_uri, self.mlflow_experiment, self.mlflow_run_id
        )
        tracker.log_params(
            {
                **p,
                "model": self.model_source,
                "device": hardware.device,
                "precision_used": hardware.precision,
            }
        )
        # 5. The loop, a checkpoint per epoch.
        self._run_epochs(run, tracker, random.Random(seed))
        # 6. Evaluation, the final adapter, the merged model.
        eval_loss = self.evaluate(
            run.model, eval_examples, run.pad_id, hardware.device, hardware.autocast
        )
        adapter_dir = self._save_adapter(
            run.model,
            tokenizer,
            self.output_dir / "adapter",
            {"step": run.step, "eval_loss": eval_loss},
        )
        self.model, merged_dir = self._merge(
            run, bool(p["merge_lora_weights"]) if merge is None else merge
        )
        self.tokenizer = tokenizer
        duration = time.perf_counter() - started
        if eval_loss is not None:
            tracker.log_metric("eval_loss", eval_loss, run.step)
        tracker.log_metric("train_tokens", float(run.tokens_trained), run.step)
        tracker.finish("FINISHED")
        return TrainingResult(
            adapter_dir=adapter_dir,
            merged_dir=merged_dir,
            checkpoints=tuple(run.checkpoints),
            history=tuple(run.history),
            eval_loss=eval_loss,
            ignored=tuple(ignored),
            parameters=p,
            tokens_trained=run.tokens_trained,
            steps=run.step,
            duration_s=duration,
            device=hardware.device,
            precision=hardware.precision,
            mlflow_run_id=tracker.run_id,
            skipped_examples=skipped,
        )

    # ----------------------------------------------------------------- steps of train

    def _max_length(self, tokenizer: Any) -> int:
        """``max_seq_length``; ``-1`` means the tokenizer's limit, at most 4096."""
        max_len = int(self.parameters["max_seq_length"])
        if max_len == -1:
            max_len = min(int(getattr(tokenizer, "model_max_length", 2048) or 2048), 4096)
        return max_len

    def _training_examples(
        self, tokenizer: Any, conversations: Sequence[Conversation], max_len: int
    ) -> tuple[list[Example], int]:
        examples, skipped = encode_examples(tokenizer, conversations, max_len)
        if not examples:
            raise LocalBackendError(
                f"none of the {len(conversations)} training conversations has an assistant "
                f"turn left within max_seq_length={max_len}; check the data or raise max_seq_length"
            )
        if skipped:
            logger.warning("skipped %d training conversations without assistant tokens", skipped)
        return examples, skipped

    def _start_run(
        self, peft_model: Any, tokenizer: Any, examples: list[Example], hardware: Hardware
    ) -> _Run:
        """AdamW on the trainable (LoRA) weights and the learning-rate schedule.

        ``max_steps > 0`` overrides ``num_train_epochs`` (the last epoch may be partial).
        """
        import torch
        from transformers import get_scheduler

        p = self.parameters
        trainable = [q for q in peft_model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=float(p["learning_rate"]), weight_decay=float(p["weight_decay"])
        )
        batches_per_epoch = math.ceil(len(examples) / int(p["per_device_train_batch_size"]))
        steps_per_epoch = max(
            1, math.ceil(batches_per_epoch / int(p["gradient_accumulation_steps"]))
        )
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
        return _Run(
            model=peft_model,
            tokenizer=tokenizer,
            examples=examples,
            hardware=hardware,
            optimizer=optimizer,
            scheduler=scheduler,
            epochs=epochs,
            total_steps=total_steps,
        )

    def _run_epochs(self, run: _Run, tracker: MlflowTracker, rng: random.Random) -> None:
        """Train until ``total_steps``; ends the MLflow run as KILLED / FAILED if it stops early."""
        p = self.parameters
        batch_size = int(p["per_device_train_batch_size"])
        accumulation = int(p["gradient_accumulation_steps"])
        logging_steps = int(p["logging_steps"])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        bar = progress_bar(desc="fine-tuning (local)", total=run.total_steps, unit="step")
        status = "FINISHED"
        try:
            for epoch in range(run.epochs):
                batches = length_batches(run.examples, batch_size, rng)
                groups = [
                    batches[k : k + accumulation] for k in range(0, len(batches), accumulation)
                ]
                for index, group in enumerate(groups):
                    if run.step >= run.total_steps:
                        break
                    metrics = self._optimizer_step(
                        run, group, round(epoch + (index + 1) / len(groups), 4)
                    )
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{metrics.loss:.4f}",
                        tok_s=f"{metrics.tokens_per_s:,.0f}",
                        refresh=False,
                    )
                    if run.step % logging_steps == 0 or run.step == run.total_steps:
                        tracker.log_step(metrics)
                    if self.on_step is not None:
                        self.on_step(metrics)
                self._checkpoint(run, epoch + 1)
                if run.step >= run.total_steps:
                    break
        except KeyboardInterrupt:
            status = "KILLED"
            logger.warning(
                "training interrupted at step %d; last checkpoint: %s",
                run.step,
                self.last_checkpoint,
            )
            raise
        except Exception:
            status = "FAILED"
            raise
        finally:
            bar.close()
            if status != "FINISHED":
                tracker.finish(status)

    def _optimizer_step(
        self, run: _Run, group: Sequence[Sequence[int]], epoch: float
    ) -> StepMetrics:
        """One optimizer step over ``group`` (``gradient_accumulation_steps`` batches).

        The loss is the mean over the group's assistant tokens, not a mean of batch means.
        """
        import torch

        device = run.hardware.device
        t0 = time.perf_counter()
        collated = [self._collate(run.examples, b, run.pad_id, device) for b in group]
        n_targets = sum(int((lab[:, 1:] != -100).sum().item()) for _, lab in collated)
        n_tokens = sum(len(run.examples[i][0]) for b in group for i in b)
        loss_total = 0.0
        for ids, labels in collated:
            with run.hardware.autocast():
                loss, _ = self._loss_sum(run.model, ids, labels)
            (loss / max(n_targets, 1)).backward()
            loss_total += float(loss.item())
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        run.step += 1
        run.tokens_trained += n_tokens
        metrics = StepMetrics(
            step=run.step,
            epoch=epoch,
            loss=loss_total / max(n_targets, 1),
            tokens_per_s=n_tokens / elapsed if elapsed > 0 else 0.0,
            learning_rate=float(run.scheduler.get_last_lr()[0]),
            tokens=n_tokens,
        )
        run.history.append(metrics)
        return metrics

    def _checkpoint(self, run: _Run, epoch: int) -> None:
        """A checkpoint per epoch, including the partial one where ``max_steps`` stopped."""
        state = {"epoch": epoch, "step": run.step, "loss": run.history[-1].loss}
        target = self.output_dir / "checkpoints" / f"epoch-{epoch}"
        run.checkpoints.append(self._save_adapter(run.model, run.tokenizer, target, state))
        self.last_checkpoint = target

    def _merge(self, run: _Run, merge: bool) -> tuple[Any, Path | None]:
        """The model for inference: merged and saved with the tokenizer, or the PEFT model.

        Returns it in eval mode, with the merged folder (``None`` when not merged).
        """
        if not merge:
            run.model.eval()
            return run.model, None
        merged = run.model.merge_and_unload()
        merged.eval()
        merged_dir = self.output_dir / "merged"
        tmp = merged_dir.with_name("merged.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(tmp)
        run.tokenizer.save_pretrained(tmp)
        if merged_dir.exists():
            shutil.rmtree(merged_dir)
        tmp.replace(merged_dir)
        return merged, merged_dir

    # ----------------------------------------------------------------- tensors

    @staticmethod
    def _collate(
        examples: Sequence[Example],
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
        examples: Sequence[Example],
        pad_id: int,
        device: str,
        autocast: Any,
    ) -> float | None:
        """Mean loss per assistant token over ``examples`` (``None`` when there are none).

        ``autocast`` is a callable returning the context each forward pass runs in.
        """
        import torch

        if not examples:
            return None
        was_training = model.training
        model.eval()
        total = 0.0
        count = 0
        with torch.no_grad():
            for batch in length_batches(
                examples, self.parameters["per_device_eval_batch_size"], None
            ):
                ids, labels = self._collate(examples, batch, pad_id, device)
                with autocast():
                    loss, n = self._loss_sum(model, ids, labels)
                total += float(loss.item())
                count += n
        model.train(was_training)
        return total / count if count else None


def train_lora(
    model: str | os.PathLike[str],
    train: Source,
    *,
    output_dir: str | os.PathLike[str],
    validation: Source | None = None,
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
