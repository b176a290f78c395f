"""The ultrachat record schema, split names, stable ids and token counting.

A record is a JSON object::

    {"prompt": "<first user message>",           # optional for user data
     "prompt_id": "<sha256 hex of prompt>",        # optional for user data (derived)
     "messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}, ...]}

Token counts use the model's tokenizer when one is given (any object with an ``encode`` method,
or a callable returning a list of ids or an int). Without one they are an **estimate**:
``ceil(characters / 4)`` for the text of every message plus :data:`MESSAGE_OVERHEAD_TOKENS`
per message for the chat template (``<|user|>``, newline, ``<|end|>``, newline in Phi-3).
English text averages about four characters per token with Llama/Phi tokenizers, so the
estimate is close for English prose and low for code or non-Latin scripts: pass the tokenizer
when the limit matters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "CHARS_PER_TOKEN",
    "HUB_SPLITS",
    "MESSAGE_OVERHEAD_TOKENS",
    "ROLES",
    "SPLIT_FILES",
    "Tokenizer",
    "TokenizerLike",
    "canonical_split",
    "count_tokens",
    "derive_prompt_id",
    "estimate_tokens",
    "first_user_message",
    "token_count_label",
]

ROLES = ("system", "user", "assistant")
#: The four splits of ``HuggingFaceH4/ultrachat_200k``.
HUB_SPLITS = ("train_sft", "test_sft", "train_gen", "test_gen")
#: Output file of each pipeline role written by ``prepare``.
SPLIT_FILES: Mapping[str, str] = {
    "train": "train.jsonl",
    "validation": "validation.jsonl",
    "test": "test.jsonl",
    "test_gen": "test_gen.jsonl",
}
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4

_SPLIT_ALIASES: Mapping[str, str] = {
    "train": "train_sft",
    "train_sft": "train_sft",
    "sft": "train_sft",
    "test": "test_sft",
    "test_sft": "test_sft",
    "eval": "test_sft",
    "train_gen": "train_gen",
    "test_gen": "test_gen",
    "gen": "test_gen",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
}


@runtime_checkable
class Tokenizer(Protocol):
    """Anything with ``encode(text) -> Sequence[int]`` (Hugging Face tokenizers qualify)."""

    def encode(self, text: str, /) -> Any: ...


TokenizerLike: TypeAlias = Tokenizer | Callable[[str], Any]


def canonical_split(name: str) -> str | None:
    """The ultrachat split a file stem or split name stands for, or ``None`` if unknown.

    ``train.jsonl`` and ``train_sft-00000-of-00003.parquet`` are both ``train_sft``;
    ``test`` is ``test_sft``; ``valid``/``val``/``dev`` are ``validation``.
    """
    key = name.lower().strip()
    if key in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[key]
    head = key.split("-", 1)[0].split(".", 1)[0]
    return _SPLIT_ALIASES.get(head)


def derive_prompt_id(prompt: str) -> str:
    """The ultrachat ``prompt_id``: the SHA-256 hex digest of the prompt's UTF-8 bytes."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def first_user_message(messages: Any) -> str | None:
    """Content of the first user message, or ``None`` when there is none."""
    if not isinstance(messages, list):
        return None
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else None
    return None


def estimate_tokens(chars: int, messages: int) -> int:
    """The documented estimate: ``ceil(chars / 4) + 4 * messages``."""
    return -(-chars // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * messages


def count_tokens(
    messages: Sequence[Mapping[str, Any]], tokenizer: TokenizerLike | None = None
) -> int:
    """Tokens in a conversation: the tokenizer's count when given, else :func:`estimate_tokens`."""
    contents = [m.get("content") for m in messages if isinstance(m, Mapping)]
    texts = [c for c in contents if isinstance(c, str)]
    if tokenizer is None:
        return estimate_tokens(sum(len(t) for t in texts), len(messages))
    return sum(_tokens_of(tokenizer, t) for t in texts) + MESSAGE_OVERHEAD_TOKENS * len(messages)


def token_count_label(tokenizer: TokenizerLike | None) -> str:
    """How reports name the token count: ``estimate`` (no tokenizer) or ``tokenizer``."""
    return "estimate" if tokenizer is None else "tokenizer"


def _tokens_of(tokenizer: TokenizerLike, text: str) -> int:
    encode = getattr(tokenizer, "encode", None)
    result = encode(text) if callable(encode) else tokenizer(text)  # type: ignore[operator]
    if isinstance(result, int):
        return result
    ids = getattr(result, "ids", None)  # tokenizers.Encoding
    if ids is not None:
        return len(ids)
    input_ids = result.get("input_ids") if isinstance(result, Mapping) else None
    if input_ids is not None:
        return len(input_ids)
    return len(result)
