"""Dynamic batching for the local endpoint: concurrent requests share one ``generate`` call.

A :class:`Batcher` owns one worker thread. Requests are :class:`GenerationJob` objects; the worker
takes the first waiting job, collects more for ``window_s`` seconds (counted from when the first
one arrived, so jobs that queued up during the previous batch go at once) up to ``max_size``,
left-pads their prompts together and runs one greedy ``generate`` call. Each row stops on its own
(end of turn, its own ``max_new_tokens``, a stop string, or its client going away) through a
stopping criterion that also streams its text, so a row gets exactly the tokens it would get
alone under greedy decoding.

Only greedy jobs without ``repetition_penalty`` share a batch: a penalty would also count the
pad tokens, sampling would draw from a different random stream, and beam search reorders rows.
Those jobs run one at a time, in arrival order, on the same worker.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from phi_finetune.local._chat import stop_token_ids

logger = logging.getLogger("phi_finetune.local.server")

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_MAX_BATCH_SIZE",
    "Batcher",
    "GenerationJob",
    "JobResult",
    "run_batch",
]

#: How long the worker waits for more requests after the first one (milliseconds).
DEFAULT_BATCH_WINDOW_MS = 5.0
#: The most requests (conversations) generated together in one call.
DEFAULT_MAX_BATCH_SIZE = 32

_SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "num_beams")


@attrs.frozen
class JobResult:
    """What one job generated: its token ids, text and why it stopped."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str
    """``stop`` (end of turn or a stop string), ``length`` (max_new_tokens) or ``cancelled``."""


@attrs.define(eq=False)
class GenerationJob:
    """One conversation to generate for: prompt token ids and how to generate.

    ``options`` are the generation parameters (``do_sample``, ``temperature``, ``top_p``,
    ``top_k``, ``repetition_penalty``, ``num_beams``); ``seed`` seeds sampling; ``stop``
    strings end the reply (they are not part of it). ``on_text`` is called from the worker
    thread with each new piece of text as it is generated. :meth:`cancel` stops the job at the
    next token. ``future`` holds the :class:`JobResult`.
    """

    prompt_ids: Sequence[int]
    max_new_tokens: int
    options: Mapping[str, Any] = attrs.field(factory=dict)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    on_text: Callable[[str], None] | None = None
    future: concurrent.futures.Future[JobResult] = attrs.field(factory=concurrent.futures.Future)
    enqueued_at: float = attrs.field(factory=time.monotonic)
    _cancelled: threading.Event = attrs.field(factory=threading.Event)

    def cancel(self) -> None:
        """Stop generating for this job (its client went away)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def greedy(self) -> bool:
        options = self.options
        if int(options.get("num_beams", 1) or 1) != 1:
            return False
        penalty = options.get("repetition_penalty")
        if penalty is not None and float(penalty) != 1.0:
            return False
        sampling = bool(options.get("do_sample", False))
        return not sampling or float(options.get("temperature", 1.0)) == 0.0


def _generation_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {k: options[k] for k in _SAMPLING_KEYS if k in options}
    for name in ("temperature", "top_p", "repetition_penalty"):
        if name in kwargs and not isinstance(kwargs[name], bool):
            kwargs[name] = float(kwargs[name])
    if not kwargs.get("do_sample", False) or float(kwargs.get("temperature", 1.0)) == 0.0:
        kwargs["do_sample"] = False
        for name in ("temperature", "top_p", "top_k"):
            kwargs.pop(name, None)
    return kwargs


class _Row:
    """Per-row state while a batch generates: tokens so far, streamed text, done or not."""

    def __init__(self, job: GenerationJob, tokenizer: Any, stop_ids: set[int]) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.tokens: list[int] = []
        self.emitted = ""
        self.text: str | None = None
        self.finish_reason: str | None = None
        self.hold = max((len(s) for s in job.stop), default=1) - 1

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _decode(self) -> str:
        return str(self.tokenizer.decode(self.tokens, skip_special_tokens=True))

    def add(self, token: int) -> None:
        job = self.job
        if job.cancelled:
            self.finish_reason = "cancelled"
            return
        self.tokens.append(token)
        text: str | None = None
        if job.stop:
            text = self._decode()
            cut = min((i for i in (text.find(s) for s in job.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text = text[:cut]
                self.finish_reason = "stop"
        if self.finish_reason is None:
            if token in self.stop_ids:
                self.finish_reason = "stop"
            elif len(self.tokens) >= job.max_new_tokens:
                self.finish_reason = "length"
        if job.on_text is None:
            return
        if self.done:
            self.flush()
            return
        text = text if text is not None else self._decode()
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        visible = text[: len(text) - self.hold] if self.hold else text
        self._emit(visible)

    def _emit(self, visible: str) -> None:
        if len(visible) > len(self.emitted) and visible.startswith(self.emitted):
            piece = visible[len(self.emitted) :]
            self.emitted = visible
            assert self.job.on_text is not None
            self.job.on_text(piece)

    def finish(self) -> JobResult:
        if self.finish_reason is None:
            self.finish_reason = "length"
        if self.text is None:
            self.text = self._decode()
        if self.job.on_text is not None:
            self.flush()
        return JobResult(tuple(self.tokens), self.text, self.finish_reason)

    def flush(self) -> None:
        if self.text is None:
            self.text = self._decode()
        self._emit(self.text)


def _stopping_criterion(rows: Sequence[_Row]) -> Any:
    import torch
    from transformers import StoppingCriteria

    class RowsDone(StoppingCriteria):
        """Feeds each row its new token; a row is done on its own terms."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            last = input_ids[:, -1].tolist()
            flags = []
            for row, token in zip(rows, last, strict=True):
                if not row.done:
                    row.add(int(token))
                flags.append(row.done)
            return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

    return RowsDone()


def run_batch(model: Any, tokenizer: Any, jobs: Sequence[GenerationJob]) -> list[JobResult]:
    """Generate for ``jobs`` in one left-padded ``generate`` call (same options for all).

    With one job and ``num_beams`` > 1 the beams run without per-token streaming (the text
    arrives at the end).
    """
    import torch
    from transformers import StoppingCriteriaList

    stop = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    device = next(model.parameters()).device
    width = max(len(job.prompt_ids) for job in jobs)
    ids = torch.full((len(jobs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for index, job in enumerate(jobs):
        length = len(job.prompt_ids)
        ids[index, width - length :] = torch.tensor(list(job.prompt_ids), dtype=torch.long)
        mask[index, width - length :] = 1
    ids, mask = ids.to(device), mask.to(device)
    kwargs = _generation_kwargs(jobs[0].options)
    rows = [_Row(job, tokenizer, set(stop)) for job in jobs]
    beams = int(kwargs.get("num_beams", 1) or 1) > 1
    extra: dict[str, Any] = {}
    if not beams:
        extra["stopping_criteria"] = StoppingCriteriaList([_stopping_criterion(rows)])
    if jobs[0].seed is not None:
        torch.manual_seed(int(jobs[0].seed))
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            eos_token_id=stop,
            pad_token_id=pad_id,
            max_new_tokens=max(job.max_new_tokens for job in jobs),
            **kwargs,
            **extra,
        )
    if beams:
        for row, sequence in zip(rows, out[:, width:].tolist(), strict=True):
            for token in sequence:
                if row.done:
                    break
                row.add(int(token))
    return [row.finish() for row in rows]


class Batcher:
    """The worker thread that batches :class:`GenerationJob` objects (see the module docstring).

    ``window_s`` 0 still batches what is already waiting; ``max_size`` 1 turns batching off.
    The window is only waited for while other requests are on their way (:meth:`announce`) or
    the previous batch held more than one job, so a lone client gets no added latency.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        window_s: float = DEFAULT_BATCH_WINDOW_MS / 1000,
        max_size: int = DEFAULT_MAX_BATCH_SIZE,
        runner: Callable[[Any, Any, Sequence[GenerationJob]], list[JobResult]] = run_batch,
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.window_s = window_s
        self.max_size = max_size
        self._runner = runner
        self._queue: queue.Queue[GenerationJob] = queue.Queue()
        self._later: collections.deque[GenerationJob] = collections.deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        """How many batches of each size ran (for tests and benchmarks)."""
        self._incoming = 0
        self._last_size = 0
        self.tokens_generated = 0
        """New tokens generated so far, over all jobs (a cancelled job counts what it made)."""

    def stats(self) -> dict[str, int]:
        """Counters for ``GET /health``: batches run, the largest one, tokens generated."""
        sizes = dict(self.batch_sizes)
        return {
            "batches": sum(sizes.values()),
            "largest_batch": max(sizes, default=0),
            "tokens_generated": self.tokens_generated,
        }

    def announce(self) -> None:
        """A request is being read or checked and will probably submit jobs soon."""
        with self._lock:
            self._incoming += 1

    def withdraw(self) -> None:
        """The announced request has submitted its jobs (or was refused)."""
        with self._lock:
            self._incoming = max(0, self._incoming - 1)

    def submit(self, job: GenerationJob) -> concurrent.futures.Future[JobResult]:
        """Queue ``job``; its future resolves when it is generated."""
        if self._stopping.is_set():
            raise RuntimeError("the batcher is stopped")
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="generate", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job.future

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after its current batch."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _next(self, timeout: float) -> GenerationJob | None:
        if self._later:
            return self._later.popleft()
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _collect(self, first: GenerationJob) -> list[GenerationJob]:
        batch = [first]
        if not first.greedy:
            return batch
        # Waiting only pays when others are coming: a lone client is not held up by the window.
        busy = self._incoming > 0 or self._last_size > 1
        deadline = first.enqueued_at + (self.window_s if busy else 0.0)
        kept: list[GenerationJob] = []
        while len(batch) < self.max_size:
            while self._later and len(batch) < self.max_size:
                job = self._later.popleft()
                (batch if job.greedy else kept).append(job)
            if len(batch) >= self.max_size:
                break
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            (batch if job.greedy else kept).append(job)
        self._later.extendleft(reversed(kept))
        return batch

    def _loop(self) -> None:
        while not self._stopping.is_set():
            first = self._next(0.2)
            if first is None:
                continue
            batch = [job for job in self._collect(first) if not self._skip(job)]
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            self._last_size = len(batch)
            try:
                results = self._runner(self.model, self.tokenizer, batch)
            except BaseException as exc:  # every waiting request gets the error, not a hang
                logger.error("generation failed for a batch of %d", len(batch), exc_info=exc)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for job, result in zip(batch, results, strict=True):
                self.tokens_generated += len(result.token_ids)
                if not job.future.done():
                    job.future.set_result(result)

    @staticmethod
    def _skip(job: GenerationJob) -> bool:
        """A job whose client left before it started is answered without generating."""
        if not job.cancelled:
            return False
        if not job.future.done():
            job.future.set_result(JobResult((), "", "cancelled"))
        return True
