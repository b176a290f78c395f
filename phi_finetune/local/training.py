"""LoRA fine-tuning of a causal LM on one machine (the local backend's "fine-tune" step).

:class:`LocalTrainer` (or the one-call :func:`train_lora`) loads any causal LM from a local
folder or a Hugging Face Hub id, adds LoRA adapters and trains them with a plain torch loop.
The steps live in their own modules:

- :mod:`~phi_finetune.local.parameters`: Azure-named parameters, which may be strings
  (``"16"``, ``"true"``); Azure-only and unknown ones are reported in
  :attr:`TrainingResult.ignored`, never silently dropped;
- :mod:`~phi_finetune.local.examples`: JSONL conversations, assistant-only loss masks and
  length bucketing (no packing); :mod:`~phi_finetune.local.batches`: padding and the loss;
- :mod:`~phi_finetune.local.model_loading`: base model and tokenizer, LoRA adapters, CUDA with
  bf16 autocast when available, else CPU in float32 (deterministic for a fixed seed on CPU);
- :mod:`~phi_finetune.local.evaluation`: evaluation cadence and early stopping;
- :mod:`~phi_finetune.local.checkpoints`: resumable checkpoints, written atomically;
- :mod:`~phi_finetune.local.distributed`: data parallel training over several processes;
- :mod:`~phi_finetune.local.tracking`: parameters and metrics to MLflow when a tracking URI is
  given.

This module is the loop: a progress bar with step, loss, eval loss and tokens/s
(:mod:`phi_finetune.progress`), a resumable checkpoint every ``save_steps`` steps and per epoch,
Ctrl-C stops cleanly and keeps the last checkpoint, evaluation on the validation data as
``evaluation_strategy`` says and at the end; finally the adapter is merged into the base model
(``merge_and_unload``) and the merged model is saved with its tokenizer, ready for
:mod:`phi_finetune.local.registry`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.errors import LocalBackendError
from phi_finetune.local import checkpoints as ckpt
from phi_finetune.local._layout import DEFAULT_EXPERIMENT
from phi_finetune.local.batches import collate, loss_sum
from phi_finetune.local.distributed import World
from phi_finetune.local.evaluation import EarlyStopping, EvalSchedule, evaluation_loss
from phi_finetune.local.examples import (
    Conversation,
    Example,
    encode_examples,
    length_batches,
    load_conversations,
)
from phi_finetune.local.model_loading import (
    Hardware,
    add_lora,
    enable_gradient_checkpointing,
    load_model_and_tokenizer,
    merge_and_save,
)
from phi_finetune.local.parameters import (
    AZURE_ONLY_PARAMETERS,
    LOCAL_PARAMETERS,
    IgnoredParameter,
    resolve_parameters,
)
from phi_finetune.local.results import StepMetrics, TrainingResult
from phi_finetune.local.run_state import RunState as _Run
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


class LocalTrainer:
    """Train LoRA adapters on a causal LM with the local backend.

    ``model`` is a local folder or a Hugging Face Hub id. ``parameters`` uses the Azure
    pipeline names (see :data:`~phi_finetune.local.parameters.LOCAL_PARAMETERS`); invalid
    values raise :class:`~phi_finetune.errors.ParameterError` here, before anything is loaded.
    ``on_step`` is called after every optimizer step (raising ``KeyboardInterrupt`` from it
    stops training like Ctrl-C). ``processes > 1`` trains data parallel in that many worker
    processes (gloo on CPU, NCCL on GPUs, see :mod:`~phi_finetune.local.distributed`); each
    takes ``per_device_train_batch_size`` examples of every step's global batch.
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
        processes: int = 1,
    ) -> None:
        if processes < 1:
            raise LocalBackendError(f"processes={processes}: must be >= 1")
        self.model_source = os.fspath(model)
        self.output_dir = Path(output_dir)
        self.parameters, self.ignored = resolve_parameters(parameters)
        self.device_request = device
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.mlflow_experiment = mlflow_experiment
        self.mlflow_run_id = mlflow_run_id
        self.lora_target_modules = lora_target_modules
        self.on_step = on_step
        self.processes = processes
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None
        """After :meth:`train`: the checkpoint it continued from (``None``: from step 0)."""
        self.model: Any = None
        """After :meth:`train`: the merged model (or the PEFT model when not merged);
        ``None`` after a multi-process run (load it from ``merged_dir``)."""
        self.tokenizer: Any = None

    def __repr__(self) -> str:
        return f"LocalTrainer(model={self.model_source!r}, output_dir={str(self.output_dir)!r})"

    @property
    def checkpoint_dir(self) -> Path:
        """Where the checkpoints go (``output_dir/checkpoints``)."""
        return self.output_dir / "checkpoints"

    # ----------------------------------------------------------------- train

    def train(
        self,
        train: Source,
        *,
        validation: Source | None = None,
        merge: bool | None = None,
    ) -> TrainingResult:
        """Train on ``train`` (JSONL path or records), evaluate on ``validation``, merge, save.

        With ``resume_from_checkpoint`` true, continues from the newest checkpoint in
        ``output_dir/checkpoints`` written for the same settings, model and data (else starts
        at step 0). Raises :class:`~phi_finetune.errors.LocalBackendError` for unusable data or
        models; re-raises ``KeyboardInterrupt`` after stopping cleanly (the last checkpoint,
        if any, stays in ``output_dir/checkpoints`` and in :attr:`last_checkpoint`).
        """
        world = World.from_environment()
        if self.processes > 1 and world.size == 1:
            from phi_finetune.local.distributed import train_in_processes

            return train_in_processes(self, train, validation=validation, merge=merge)
        import torch

        from phi_finetune.local.fused_lora import fused_lora

        p = self.parameters
        started = time.perf_counter()
        seed = int(p["seed"])
        # 1. Seeds, device and precision.
        random.seed(seed)
        torch.manual_seed(seed)
        hardware = Hardware.choose(world.device(self.device_request), str(p["precision"]), seed)
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
        if bool(p["gradient_checkpointing"]):
            enable_gradient_checkpointing(model)
        # 3. LoRA adapters, optimizer and schedule; reseeded so that the adapters' initial
        # weights do not depend on what loading the model drew from the generator.
        torch.manual_seed(seed)
        peft_model = add_lora(model, p, self.lora_target_modules)
        run = self._start_run(peft_model, tokenizer, examples, eval_examples, hardware, world)
        data_rng = random.Random(seed)
        if bool(p["resume_from_checkpoint"]):
            self._resume(run, data_rng)
        # 4. Tracking (rank 0 only).
        tracker = MlflowTracker.start(
            self.mlflow_tracking_uri if world.is_main else None,
            self.mlflow_experiment,
            self.mlflow_run_id,
        )
        # A resumed run logs into a new MLflow run: the killed one may be in another store.
        run.mlflow_run_id = tracker.run_id
        tracker.log_params(
            {
                **p,
                "model": self.model_source,
                "device": hardware.device,
                "precision_used": hardware.precision,
                "processes": world.size,
            }
        )
        # 5. The loop, with evaluations and checkpoints.
        with fused_lora(run.model):
            self._run_epochs(run, tracker, data_rng)
        # 6. Evaluation, the final adapter, the merged model.
        eval_loss = self._final_eval(run)
        if not world.is_main:
            tracker.finish("FINISHED")
            return self._result(run, None, None, eval_loss, ignored, skipped, started)
        adapter_dir = ckpt.write_checkpoint(
            self.output_dir / "adapter",
            model=run.model,
            tokenizer=tokenizer,
            state={"step": run.step, "eval_loss": eval_loss},
        )
        self.model, merged_dir = self._merge(
            run, bool(p["merge_lora_weights"]) if merge is None else merge
        )
        self.tokenizer = tokenizer
        if eval_loss is not None:
            tracker.log_metric("eval_loss", eval_loss, run.step)
        tracker.log_metric("train_tokens", float(run.tokens_trained), run.step)
        tracker.finish("FINISHED")
        return self._result(run, adapter_dir, merged_dir, eval_loss, ignored, skipped, started)

    def _result(
        self,
        run: _Run,
        adapter_dir: Path | None,
        merged_dir: Path | None,
        eval_loss: float | None,
        ignored: Sequence[IgnoredParameter],
        skipped: int,
        started: float,
    ) -> TrainingResult:
        return TrainingResult(
            adapter_dir=adapter_dir or self.output_dir / "adapter",
            merged_dir=merged_dir,
            checkpoints=tuple(run.checkpoints),
            history=tuple(run.history),
            eval_loss=eval_loss,
            ignored=tuple(ignored),
            parameters=self.parameters,
            tokens_trained=run.tokens_trained,
            steps=run.step,
            duration_s=time.perf_counter() - started,
            device=run.hardware.device,
            precision=run.hardware.precision,
            mlflow_run_id=run.mlflow_run_id,
            skipped_examples=skipped,
            stopped_early=run.stopped_early,
            resumed_from=run.resumed_from,
            processes=run.world.size,
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

    def _global_batch(self, world: World) -> int:
        return int(self.parameters["per_device_train_batch_size"]) * world.size

    def _start_run(
        self,
        peft_model: Any,
        tokenizer: Any,
        examples: list[Example],
        eval_examples: list[Example],
        hardware: Hardware,
        world: World,
    ) -> _Run:
        """AdamW on the trainable (LoRA) weights and the learning-rate schedule.

        ``max_steps > 0`` overrides ``num_train_epochs`` (the last epoch may be partial).
        """
        import torch
        from transformers import get_scheduler

        p = self.parameters
        trainable = [q for q in peft_model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable,
            lr=float(p["learning_rate"]),
            weight_decay=float(p["weight_decay"]),
            # One kernel for all adapters (HF Trainer's default optimizer too).
            fused=hardware.device.split(":")[0] in ("cpu", "cuda"),
        )
        batches_per_epoch = math.ceil(len(examples) / self._global_batch(world))
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
        early = EarlyStopping.from_parameters(p)
        if early.enabled and not eval_examples:
            logger.warning("apply_early_stopping is set but there is no validation data: ignored")
        return _Run(
            model=peft_model,
            tokenizer=tokenizer,
            examples=examples,
            eval_examples=eval_examples,
            hardware=hardware,
            world=world,
            optimizer=optimizer,
            scheduler=scheduler,
            epochs=epochs,
            total_steps=total_steps,
            schedule=EvalSchedule.from_parameters(p, steps_per_epoch),
            early=early,
            fingerprint=ckpt.fingerprint(p, self.model_source, examples, world.size),
        )

    def _run_epochs(self, run: _Run, tracker: MlflowTracker, rng: random.Random) -> None:
        """Train until ``total_steps``; ends the MLflow run as KILLED / FAILED if it stops early."""
        p = self.parameters
        accumulation = int(p["gradient_accumulation_steps"])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        bar = progress_bar(
            desc="fine-tuning (local)",
            total=run.total_steps,
            initial=run.step,
            unit="step",
        )
        status = "FINISHED"
        try:
            for epoch in range(run.epoch, run.epochs):
                if run.step >= run.total_steps or run.stopped_early:
                    break
                run.epoch_rng_state = rng.getstate()
                batches = length_batches(run.examples, self._global_batch(run.world), rng)
                groups = [
                    batches[k : k + accumulation] for k in range(0, len(batches), accumulation)
                ]
                first, run.epoch, run.next_group = run.next_group, epoch, 0
                for index in range(first, len(groups)):
                    if run.step >= run.total_steps:
                        break
                    metrics = self._optimizer_step(
                        run, groups[index], round(epoch + (index + 1) / len(groups), 4)
                    )
                    run.next_group = index + 1
                    epoch_end = index + 1 == len(groups) or run.step >= run.total_steps
                    metrics = self._after_step(run, tracker, metrics, epoch_end=epoch_end)
                    bar.update(1)
                    bar.set_postfix(**self._postfix(run, metrics), refresh=False)
                    if self.on_step is not None:
                        self.on_step(metrics)
                    if run.stopped_early:
                        break
                run.epoch, run.next_group = epoch + 1, 0
                run.epoch_rng_state = rng.getstate()
                self._checkpoint(run, f"epoch-{epoch + 1}")
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

    def _after_step(
        self, run: _Run, tracker: MlflowTracker, metrics: StepMetrics, *, epoch_end: bool
    ) -> StepMetrics:
        """Logging, the evaluation when due (and early stopping), a step checkpoint when due."""
        p = self.parameters
        if run.step % int(p["logging_steps"]) == 0 or run.step == run.total_steps:
            tracker.log_step(metrics)
        if run.eval_examples and run.schedule.due(run.step, epoch_end=epoch_end):
            eval_loss = self._evaluate_run(run)
            metrics = attrs.evolve(metrics, eval_loss=eval_loss)
            run.history[-1] = metrics
            tracker.log_metric("eval_loss", eval_loss, run.step)
            stop = run.early.update(eval_loss)
            run.stopped_early = run.world.agree(stop)
            if run.stopped_early:
                logger.info(
                    "early stopping at step %d: eval loss %.4f, best %.4f, %d evaluation(s) "
                    "without an improvement > %g",
                    run.step,
                    eval_loss,
                    run.early.best,
                    run.early.bad_evaluations,
                    run.early.threshold,
                )
        save_steps = int(p["save_steps"])
        if save_steps and run.step % save_steps == 0 and not epoch_end and not run.stopped_early:
            self._checkpoint(run, f"step-{run.step}")
            ckpt.prune_step_checkpoints(self.checkpoint_dir, int(p["save_total_limit"]))
        return metrics

    @staticmethod
    def _postfix(run: _Run, metrics: StepMetrics) -> dict[str, str]:
        shown = {"loss": f"{metrics.loss:.4f}"}
        if run.last_eval is not None:
            shown["eval_loss"] = f"{run.last_eval[1]:.4f}"
        shown["tok_s"] = f"{metrics.tokens_per_s:,.0f}"
        return shown

    def _evaluate_run(self, run: _Run) -> float:
        loss = self.evaluate(
            run.model, run.eval_examples, run.pad_id, run.hardware.device, run.hardware.autocast
        )
        assert loss is not None  # eval_examples is not empty
        run.last_eval = (run.step, loss)
        return loss

    def _final_eval(self, run: _Run) -> float | None:
        """The evaluation loss after training (reused when the last step was evaluated)."""
        if run.last_eval is not None and run.last_eval[0] == run.step:
            return run.last_eval[1]
        if not run.eval_examples:
            return None
        loss = self._evaluate_run(run)
        if run.history:
            run.history[-1] = attrs.evolve(run.history[-1], eval_loss=loss)
        return loss

    def _optimizer_step(
        self, run: _Run, group: Sequence[Sequence[int]], epoch: float
    ) -> StepMetrics:
        """One optimizer step over ``group`` (``gradient_accumulation_steps`` global batches).

        The loss is the mean over the group's assistant tokens, not a mean of batch means.
        With several processes each takes every ``world.size``-th example of each batch and
        the gradients are summed across processes: the same step as one process would take.
        """
        import torch

        device = run.hardware.device
        world = run.world
        t0 = time.perf_counter()
        # Counted over the whole (global) group: every process holds all examples.
        n_targets = sum(sum(run.examples[i][1][1:]) for b in group for i in b)
        n_tokens = sum(len(run.examples[i][0]) for b in group for i in b)
        loss_total = 0.0
        for batch in group:
            shard = list(batch[world.rank :: world.size])
            if not shard:
                continue
            ids, labels = collate(run.examples, shard, run.pad_id, device)
            with run.hardware.autocast():
                loss, _ = loss_sum(run.model, ids, labels)
            (loss / max(n_targets, 1)).backward()
            loss_total += float(loss.item())
        if world.size > 1:
            loss_total = world.reduce_gradients(run.optimizer, loss_total)
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

    # ----------------------------------------------------------------- checkpoints

    def _checkpoint(self, run: _Run, name: str) -> None:
        """A resumable checkpoint (adapter, optimizer, scheduler, generators, data position)."""
        if not run.world.is_main:
            return
        target = ckpt.save_run(self.checkpoint_dir / name, run)
        if target not in run.checkpoints:
            run.checkpoints.append(target)
        self.last_checkpoint = target

    def _resume(self, run: _Run, data_rng: random.Random) -> None:
        """Continue from the newest matching checkpoint, if there is one."""
        found, mismatched = ckpt.find_resumable(self.checkpoint_dir, run.fingerprint)
        if found is None:
            if mismatched:
                logger.warning(
                    "%d checkpoint(s) in %s were written for other settings, model or data; "
                    "training starts at step 0",
                    mismatched,
                    self.checkpoint_dir,
                )
            return
        ckpt.restore_run(found, run, data_rng)
        run.checkpoints = sorted(
            (f for f in self.checkpoint_dir.iterdir() if not f.name.startswith(".")),
            key=lambda f: int(ckpt.read_state(f).get("step", 0)),
        )
        run.resumed_from = self.resumed_from = self.last_checkpoint = found
        logger.info("resuming from %s (step %d of %d)", found, run.step, run.total_steps)

    def _merge(self, run: _Run, merge: bool) -> tuple[Any, Path | None]:
        """The model for inference (eval mode) and the merged folder (``None``: not merged)."""
        if not merge:
            run.model.eval()
            return run.model, None
        return merge_and_save(run.model, run.tokenizer, self.output_dir / "merged")

    # ----------------------------------------------------------------- tensors

    _collate = staticmethod(collate)
    _loss_sum = staticmethod(loss_sum)

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
        return evaluation_loss(
            model,
            examples,
            int(self.parameters["per_device_eval_batch_size"]),
            pad_id,
            device,
            autocast,
        )


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
    processes: int = 1,
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
        processes=processes,
    )
    return trainer.train(train, validation=validation)
