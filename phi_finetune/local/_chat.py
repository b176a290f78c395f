"""Chat-format helpers shared by training, the pyfunc model and the server.

- :data:`PHI3_CHAT_TEMPLATE`: the Phi-3 chat format (``<|user|>\\n...<|end|>\\n``), with
  ``{% generation %}`` markers around assistant content.
- :func:`assistant_token_mask`: which tokens of a rendered conversation are assistant output,
  computed from the rendered text itself, so it works with any chat template (no
  ``{% generation %}`` markers needed) and any fast tokenizer.
- :func:`generate`: greedy or sampled replies for conversations, given the Azure scoring
  ``parameters``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "PHI3_SPECIAL_TOKENS",
    "assistant_token_mask",
    "context_length",
    "encode_conversation",
    "encode_prompts",
    "generate",
    "render_prompt",
]

#: Phi-3 special tokens (the order fixes their ids in the tiny test model).
PHI3_SPECIAL_TOKENS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>")

#: The Phi-3 chat format; assistant content is wrapped in generation markers.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>\n' }}"
    "{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

_GENERATION_KEYS = (
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "num_beams",
)


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=prompt
    )
    return str(text)


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt text the model continues for ``messages`` (the chat template's
    generation prompt added)."""
    return _render(tokenizer, messages, prompt=True)


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(
    tokenizer: Any, messages: Sequence[Mapping[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn.

    A span starts where the prompt for that turn ends (``add_generation_prompt=True`` on the
    messages before it) and ends where the rendering up to that turn stops agreeing with the
    full rendering (minus a closing eos token), so it includes the turn's end marker
    (``<|end|>``) the model must learn to emit.
    """
    full = _render(tokenizer, messages, prompt=False)
    eos = str(getattr(tokenizer, "eos_token", None) or "")
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prefix = _render(tokenizer, messages[:index], prompt=True) if index else ""
        upto = _render(tokenizer, messages[: index + 1], prompt=False)
        # The template closes the whole conversation with eos; it is not part of this turn.
        if eos and upto.endswith(eos):
            upto = upto[: -len(eos)]
        start = len(prefix) if full.startswith(prefix) else _common_prefix(prefix, full)
        end = _common_prefix(upto, full)
        if end > start:
            spans.append((start, end))
    return full, spans


def encode_conversation(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], *, max_length: int | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether it is assistant output."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
    )
    ids = [int(i) for i in encoded["input_ids"]]
    offsets = encoded["offset_mapping"]
    mask = [
        any(tok_start < end and tok_end > start for start, end in spans)
        for tok_start, tok_end in offsets
    ]
    if max_length is not None and len(ids) > max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def assistant_token_mask(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[bool]:
    """Per token of the rendered conversation: ``True`` where it is assistant output."""
    return encode_conversation(tokenizer, messages)[1]


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the generation config's eos ids plus ``<|end|>`` when the vocab has it."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif isinstance(configured, list | tuple):
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    if "<|end|>" in vocab:
        ids.append(int(vocab["<|end|>"]))
    return sorted(set(ids))


def no_mlflow_telemetry() -> None:
    """Keep MLflow from phoning home (``config.mlflow-telemetry.io``) from the offline backend.

    Sets ``MLFLOW_DISABLE_TELEMETRY=true`` unless the user set it; call before importing mlflow.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


_GENERATE_LOCK = threading.Lock()


def context_length(model: Any) -> int | None:
    """The model's context in token positions (``max_position_embeddings``), if it says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def encode_prompts(
    tokenizer: Any, conversations: Sequence[Sequence[Mapping[str, str]]]
) -> list[list[int]]:
    """The prompt token ids :func:`generate` feeds the model for each conversation."""
    prompts = [_render(tokenizer, conversation, prompt=True) for conversation in conversations]
    return [
        [int(i) for i in tokenizer(prompt, add_special_tokens=False)["input_ids"]]
        for prompt in prompts
    ]


def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    parameters: Mapping[str, Any] | None = None,
    *,
    prompt_ids: Sequence[Sequence[int]] | None = None,
) -> list[str]:
    """Reply to each conversation; ``parameters`` are the Azure scoring generation parameters.

    Conversations are generated one at a time (no padding, so a reply does not depend on what
    else is in the batch) under a process-wide lock (safe to call from server threads).
    ``temperature == 0`` or ``do_sample`` false means greedy decoding. ``return_full_text``
    true prepends the rendered prompt. ``prompt_ids`` (from :func:`encode_prompts`) saves
    encoding the conversations again.
    """
    import torch

    params = dict(parameters or {})
    kwargs: dict[str, Any] = {k: params[k] for k in _GENERATION_KEYS if k in params}
    kwargs.setdefault("max_new_tokens", 200)
    # transformers insists on floats here (``temperature`` 1 from JSON would be refused).
    for name in ("temperature", "top_p", "repetition_penalty"):
        if name in kwargs and not isinstance(kwargs[name], bool):
            kwargs[name] = float(kwargs[name])
    if not kwargs.get("do_sample", False) or float(kwargs.get("temperature", 1.0)) == 0.0:
        kwargs["do_sample"] = False
        for name in ("temperature", "top_p", "top_k"):
            kwargs.pop(name, None)
    return_full_text = bool(params.get("return_full_text", False))
    stop = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    device = next(model.parameters()).device
    encoded = list(prompt_ids) if prompt_ids is not None else None
    if encoded is not None and len(encoded) != len(conversations):
        raise ValueError("prompt_ids must hold one entry per conversation")
    replies: list[str] = []
    with _GENERATE_LOCK, torch.inference_mode():
        for index, conversation in enumerate(conversations):
            prompt = _render(tokenizer, conversation, prompt=True) if return_full_text else ""
            if encoded is not None:
                ids = torch.tensor([list(encoded[index])], dtype=torch.long)
            else:
                text = prompt or _render(tokenizer, conversation, prompt=True)
                ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = ids.to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                eos_token_id=stop,
                pad_token_id=pad_id,
                **kwargs,
            )
            new = out[0, ids.shape[1] :]
            text = tokenizer.decode(new, skip_special_tokens=True)
            replies.append(prompt + text if return_full_text else text)
    return replies
